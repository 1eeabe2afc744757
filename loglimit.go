package omnibox

import (
	"sync"
	"time"
)

// Rate of the relay's warnings about events to be retried: a burst of
// retryLogBurst lines, then one every retryLogEvery; the lines left out are
// counted in the next one.
const (
	retryLogBurst = 10
	retryLogEvery = time.Second
)

// logLimiter is a token bucket for log lines that could otherwise flood the
// log (one per failed event while a poison batch is retried).
type logLimiter struct {
	mu         sync.Mutex
	burst      int
	every      time.Duration
	tokens     float64
	last       time.Time
	suppressed int
}

func newLogLimiter(burst int, every time.Duration) *logLimiter {
	return &logLimiter{burst: burst, every: every, tokens: float64(burst)}
}

// allow reports whether a line may be logged now and, when it may, how many
// were left out since the last one.
func (l *logLimiter) allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() {
		l.tokens = min(float64(l.burst), l.tokens+float64(now.Sub(l.last))/float64(l.every))
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
