// Package nilcheck refuses nil dependencies, including the typed nil an
// interface holds when a constructor's error was ignored:
//
//	pub, _ := publisher.NewKafka(config) // fails: pub is a nil *publisher.Kafka
//	relay, err := omnibox.NewRelay(db, store, pub, ...)
//
// pub != nil there (the interface holds a type), so a plain nil check lets it
// through and the first call on it panics far from the cause.
package nilcheck

import (
	"fmt"
	"reflect"
	"strings"
	"unicode"
)

// IsNil reports whether v is nil or holds a nil pointer, map, slice, func,
// channel or interface.
func IsNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}

// Check returns nil when v is usable, else an error wrapping sentinel whose
// text names where (such as "omnibox: NewRelay"), what ("publisher"), the
// type of a typed nil and the likely cause:
//
//	omnibox: NewRelay: publisher is a nil *publisher.Kafka (did publisher.NewKafka return an error?)
func Check(where, what string, v any, sentinel error) error {
	if !IsNil(v) {
		return nil
	}
	if v == nil {
		return &Error{msg: fmt.Sprintf("%s: %s is nil", where, what), sentinel: sentinel}
	}
	typ := fmt.Sprintf("%T", v)
	msg := fmt.Sprintf("%s: %s is a nil %s", where, what, typ)
	if c := constructor(typ); c != "" {
		msg += fmt.Sprintf(" (did %s return an error?)", c)
	} else {
		msg += " (did the call that made it return an error?)"
	}
	return &Error{msg: msg, sentinel: sentinel}
}

// Error is the error of [Check]: its text says what was nil and why it may
// be, and it wraps the caller's sentinel.
type Error struct {
	msg      string
	sentinel error
}

// Error implements error.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.sentinel }

// constructor guesses the function that returns a value of typ ("*pkg.T"):
// pkg.New for a package's main type (its Store, or a type named after the
// package), pkg.NewX for an XStore, sql.Open for *sql.DB, pkg.NewT
// otherwise, as Go names them.
func constructor(typ string) string {
	name, ok := strings.CutPrefix(typ, "*")
	if !ok {
		return ""
	}
	pkg, t, ok := strings.Cut(name, ".")
	if !ok || t == "" || strings.ContainsAny(t, "[.") || !unicode.IsUpper(rune(t[0])) {
		return "" // unexported or generic: no guess
	}
	switch {
	case name == "sql.DB":
		return "sql.Open"
	case name == "sql.Tx":
		return "sql.DB.BeginTx"
	case name == "sql.Conn":
		return "sql.DB.Conn"
	case t == "Store" || strings.EqualFold(t, pkg) || name == "omnibox.Outbox":
		return pkg + ".New"
	case strings.HasSuffix(t, "Store"): // postgres.InboxStore: postgres.NewInbox
		return pkg + ".New" + strings.TrimSuffix(t, "Store")
	}
	return pkg + ".New" + t
}
