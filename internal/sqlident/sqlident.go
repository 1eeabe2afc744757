// Package sqlident validates and quotes SQL identifiers that come from
// configuration (schema and table names), so that none is ever concatenated
// into a query unchecked.
package sqlident

import (
	"fmt"
	"regexp"
)

// MaxLen is the longest identifier accepted. PostgreSQL truncates names at 63
// bytes and MySQL at 64; stores derive index and helper-table names by adding
// suffixes of up to 15 bytes, so configured names are kept to 48.
const MaxLen = 48

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// Validate reports whether name is a plain lower-case SQL identifier: a letter
// or underscore, then letters, digits or underscores, at most [MaxLen] bytes.
// what names the setting in the error ("table", "schema"). The returned error
// wraps sentinel.
func Validate(what, name string, sentinel error) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: %s name is empty", sentinel, what)
	case len(name) > MaxLen:
		return fmt.Errorf("%w: %s name %q is %d bytes long, the limit is %d", sentinel, what, name, len(name), MaxLen)
	case !identRE.MatchString(name):
		return fmt.Errorf("%w: %s name %q must match %s (lower-case letters, digits and underscores, not starting with a digit)", sentinel, what, name, identRE)
	}
	return nil
}
