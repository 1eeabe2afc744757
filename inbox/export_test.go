package inbox

import "time"

// SetNow replaces the clock [Inbox.Purge] computes its window from, so that
// tests can age rows without waiting.
func SetNow(i *Inbox, now func() time.Time) { i.now = now }
