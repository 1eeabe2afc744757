package omniboxtest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The kit's clusters, clients and subscribers must end their goroutines at
// cleanup: users may check their own tests with goleak.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
