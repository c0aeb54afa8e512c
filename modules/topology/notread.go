package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// errPasswordNotResolved marks a store whose password placeholder does not
// resolve where the report runs (which may not be Caddy's environment).
var errPasswordNotResolved = errors.New("password not resolvable")

// notReadFindings adds a certificate_not_read finding for each certificate
// the report failed to read: an error, since Caddy reads them when it
// loads the config, but a warning for what may depend on where the report
// runs (a password placeholder, a file this user may not read).
// Certificates not read by design (managed by Caddy) are no finding.
func (a *analyzer) notReadFindings() {
	for _, c := range a.rep.Certificates {
		if c.readErr == nil {
			continue
		}
		path := c.UsedBy[0] // where its findings point
		msg := fmt.Sprintf("%s %s (%s) cannot be read: %s", roleNames[c.Role], c.ID, c.Source, c.NotRead)
		switch {
		case errors.Is(c.readErr, errPasswordNotResolved):
			a.finding(SeverityWarning, KindCertNotRead, path,
				msg+": the password does not resolve where this report runs; Caddy refuses to start with this config if it does not resolve in Caddy's environment either",
				"set the environment variable or file the password placeholder names, where Caddy runs (and where the report runs, to check the store)")
		case errors.Is(c.readErr, fs.ErrPermission):
			a.finding(SeverityWarning, KindCertNotRead, path,
				msg+": this report may not read it; Caddy refuses to start with this config if its user may not either",
				"make it readable by the user Caddy runs as, and run the report as that user")
		default:
			a.finding(SeverityError, KindCertNotRead, path,
				msg+": Caddy reads it when it loads this config and refuses to start without it (a running instance keeps what it read until its next reload or restart)",
				"put the file in place, or correct its path in the config, in the format the config names (and with its password, for a store); `caddy validate` loads it as Caddy does")
		}
	}
}

// keyFile checks that the private key file of a certificate exists (the
// report never reads keys): Caddy refuses a config whose key file is
// missing.
func (a *analyzer) keyFile(file, path string) {
	if file == "" || a.opts.NoFiles {
		return
	}
	file = expandPath(file)
	st, err := os.Stat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err == nil && st.Mode().IsRegular():
		return
	case err == nil:
		err = errors.New("not a regular file")
	default:
		return // anything else (permission) is for Caddy to say
	}
	a.finding(SeverityError, KindKeyNotFound, path,
		fmt.Sprintf("private key file %s: %v: Caddy refuses to start with this config (a running instance keeps the key it read until its next reload or restart)", file, err),
		"put the certificate's key at "+file+", or correct the key path in the config")
}
