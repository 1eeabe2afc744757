package mysql

import (
	"testing"

	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/storetest"
)

// BenchmarkClaim measures a relay's claim transaction and the Complete that
// gives its events back (see [storetest.BenchmarkClaim]).
func BenchmarkClaim(b *testing.B) {
	db, _ := dbtest.MySQL(b)
	s, err := New(&Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Migrate(b.Context(), db); err != nil {
		b.Fatal(err)
	}
	storetest.BenchmarkClaim(b, db, s)
}
