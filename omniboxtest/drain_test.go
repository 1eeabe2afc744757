package omniboxtest_test

import (
	"errors"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox"
	"github.com/omnibox-go/omnibox/omniboxtest"
)

func TestDrain(t *testing.T) {
	t.Parallel()
	db, store := omniboxtest.SQLite(t)
	pubSub := newGoChannel(t)

	var events []omnibox.Event
	for i := range 10 {
		events = append(events, omnibox.Event{ID: strconv.Itoa(i), Topic: "orders", Key: "order-1", Payload: []byte("x")})
	}
	writeEvents(t, db, store, events...)
	require.Equal(t, 10, omniboxtest.Drain(t, db, store, pubSub))
	require.Zero(t, omniboxtest.Drain(t, db, store, pubSub), "a second Drain finds nothing")

	ch, err := pubSub.Subscribe(t.Context(), "orders")
	require.NoError(t, err)
	require.Equal(t, uuids(0, 10), receive(t, ch, 10))
}

type failingPublisher struct{}

func (failingPublisher) Publish(string, ...*message.Message) error {
	return errors.New("broker says no")
}
func (failingPublisher) Close() error { return nil }

// A batch that fails as a whole fails the test.
func TestDrain_FailsTheTest(t *testing.T) {
	t.Parallel()
	db, store := omniboxtest.SQLite(t)
	writeEvents(t, db, store, omnibox.Event{Topic: "orders", Key: "k", Payload: []byte("x")})
	rec := runRecorded(t, func(tb testing.TB) { omniboxtest.Drain(tb, db, store, failingPublisher{}) })
	require.True(t, rec.failed)
	require.Contains(t, rec.msg, "broker says no")
}
