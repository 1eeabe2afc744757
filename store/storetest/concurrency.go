package storetest

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
)

// concurrencyCases checks, unless [Features].NoConcurrentClaims, that relays
// claiming and completing at once never share an event and keep the order
// of each key.
func (s *suite) concurrencyCases(t *testing.T) {
	t.Run("ConcurrentRelaysNeverShareAnEventAndKeepKeyOrder", func(t *testing.T) {
		t.Parallel()
		if s.f.NoConcurrentClaims {
			t.Skip("storetest: Features.NoConcurrentClaims is set")
		}
		b := s.setup(t)
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()

		// 16 keys and keyless events; about one event in eight fails once.
		const total, relays = 600, 8
		events := make([]omnibox.Event, total)
		for i := range events {
			key := fmt.Sprintf("key-%d", i%17)
			if i%17 == 16 {
				key = ""
			}
			events[i] = newEvent("concurrent", key)
		}
		Insert(t, b.db, b.store, events...)
		failsOnce := func(id string) bool {
			hash := fnv.New32a()
			_, _ = hash.Write([]byte(id))
			return hash.Sum32()%8 == 0
		}

		var (
			mu        sync.Mutex
			delivered = make(map[string]bool, total)
			inFlight  = make(map[string]string) // event ID -> owner
			byKey     = make(map[string][]string)
			errs      = make(chan error, relays)
			wg        sync.WaitGroup
		)
		done := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(delivered) == total
		}
		// relay claims, publishes (failing some events once, and giving
		// back the later events of a failed one's key, as the relay does)
		// and completes, until every event is delivered.
		relay := func(r int) error {
			for i := 0; !done(); i++ {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("relay %d: %w", r, err)
				}
				owner := fmt.Sprintf("r%d/%d", r, i)
				got, err := tryClaim(ctx, b.db, b.store, omnibox.ClaimParams{
					BlockOnDead: true, Lease: time.Minute, Limit: 50, Owner: owner, Relay: fmt.Sprintf("r%d", r),
				})
				if err != nil {
					return fmt.Errorf("relay %d: %w", r, err)
				}
				if len(got) == 0 {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				var p omnibox.CompleteParams
				p.Owner = owner
				failedKeys := make(map[string]bool)
				mu.Lock()
				for _, ev := range got {
					if prev, ok := inFlight[ev.ID]; ok {
						mu.Unlock()
						return fmt.Errorf("event %s claimed by %s while %s held it", ev.ID, owner, prev)
					}
					if delivered[ev.ID] {
						mu.Unlock()
						return fmt.Errorf("event %s claimed by %s after it was delivered", ev.ID, owner)
					}
					inFlight[ev.ID] = owner
					switch {
					case ev.Key != "" && failedKeys[ev.Key]:
						p.Released = append(p.Released, ev.Seq)
					case ev.Attempts == 0 && failsOnce(ev.ID):
						p.Retry = append(p.Retry, omnibox.FailedEvent{Error: "flaky", Seq: ev.Seq})
						if ev.Key != "" {
							failedKeys[ev.Key] = true
						}
					default:
						p.Delivered = append(p.Delivered, ev.Seq)
						delivered[ev.ID] = true
						if ev.Key != "" {
							byKey[ev.Key] = append(byKey[ev.Key], ev.ID)
						}
					}
				}
				for _, ev := range got {
					delete(inFlight, ev.ID)
				}
				mu.Unlock()
				res, err := tryComplete(ctx, b.db, b.store, p)
				if err != nil {
					return fmt.Errorf("relay %d: %w", r, err)
				}
				if res.Delivered != len(p.Delivered) {
					return fmt.Errorf("relay %d: %d of %d delivered events counted", r, res.Delivered, len(p.Delivered))
				}
			}
			return nil
		}
		for r := range relays {
			wg.Go(func() {
				err := relay(r)
				if err != nil {
					cancel() // the others stop too, instead of waiting for the timeout
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Len(t, delivered, total)
		want := make(map[string][]string)
		for _, ev := range events {
			if ev.Key != "" {
				want[ev.Key] = append(want[ev.Key], ev.ID)
			}
		}
		require.Equal(t, want, byKey, "each key's events delivered in insert order")
		requirePending(t, b.db, b.store, 0)
	})
}
