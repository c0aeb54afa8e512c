// Package docs holds the project's architecture, style and benchmark notes
// (Markdown) and the tests that keep the repository's documentation
// self-contained: every relative link resolves to a file of the
// repository, no page points outside it, and DEVELOPING.md lists every
// fuzz target.
package docs
