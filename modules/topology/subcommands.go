package topology

import (
	"sync"

	"github.com/spf13/cobra"
)

// The subcommands of `caddy trustline` that live in other packages (`caddy
// trustline explain`): each registers, in its init, a function that adds
// its cobra command to `caddy trustline`. The command is built lazily, by
// Caddy's command factory, so every package's init has run by then.
var (
	subcommandsMu sync.Mutex
	subcommands   []func(trustline *cobra.Command)
)

// RegisterSubcommand adds a subcommand to `caddy trustline`: add is called
// with the trustline command when Caddy builds its commands.
func RegisterSubcommand(add func(trustline *cobra.Command)) {
	subcommandsMu.Lock()
	defer subcommandsMu.Unlock()
	subcommands = append(subcommands, add)
}

// addSubcommands adds the registered subcommands to cmd.
func addSubcommands(cmd *cobra.Command) {
	subcommandsMu.Lock()
	defer subcommandsMu.Unlock()
	for _, add := range subcommands {
		add(cmd)
	}
}
