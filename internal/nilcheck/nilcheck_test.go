package nilcheck_test

import (
	"database/sql"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox/internal/nilcheck"
)

type Thing struct{}

func (*Thing) Write(p []byte) (int, error) { return len(p), nil }

var errSentinel = errors.New("sentinel")

func TestCheck(t *testing.T) {
	t.Parallel()
	var nilThing *Thing
	var nilDB *sql.DB
	var nilFunc func()
	for name, tc := range map[string]struct {
		v    any
		want string
	}{
		"Untyped":  {v: nil, want: "f: dep is nil"},
		"TypedNil": {v: io.Writer(nilThing), want: "f: dep is a nil *nilcheck_test.Thing (did nilcheck_test.NewThing return an error?)"},
		"DB":       {v: nilDB, want: "f: dep is a nil *sql.DB (did sql.Open return an error?)"},
		"Func":     {v: nilFunc, want: "f: dep is a nil func() (did the call that made it return an error?)"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.True(t, nilcheck.IsNil(tc.v))
			err := nilcheck.Check("f", "dep", tc.v, errSentinel)
			require.ErrorIs(t, err, errSentinel)
			require.Equal(t, tc.want, err.Error())
		})
	}
	for _, v := range []any{&Thing{}, 0, "", strings.NewReader(""), Thing{}} {
		require.False(t, nilcheck.IsNil(v), "%T", v)
		require.NoError(t, nilcheck.Check("f", "dep", v, errSentinel))
	}
}
