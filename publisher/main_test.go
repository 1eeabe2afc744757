package publisher_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// sarama registers go-metrics meters; go-metrics starts one global
		// ticker goroutine for all meters and never stops it.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		// A sarama topic producer's circuit breaker, once open, sleeps 10 s
		// in a goroutine of its own before it half-closes, even after the
		// producer is closed.
		goleak.IgnoreAnyFunction("github.com/eapache/go-resiliency/breaker.(*Breaker).timer"),
	)
}
