package postgres

import (
	"testing"

	"github.com/omnibox-go/omnibox/internal/dbtest"
	"github.com/omnibox-go/omnibox/store/storetest"
)

// BenchmarkClaim measures a relay's claim transaction and the Complete that
// gives its events back (see [storetest.BenchmarkClaim]), through each
// driver.
func BenchmarkClaim(b *testing.B) {
	for _, driver := range drivers {
		b.Run(driver, func(b *testing.B) {
			db, schema := dbtest.Postgres(b, driver)
			s, err := New(&Config{Schema: schema})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Migrate(b.Context(), db); err != nil {
				b.Fatal(err)
			}
			storetest.BenchmarkClaim(b, db, s)
		})
	}
}
