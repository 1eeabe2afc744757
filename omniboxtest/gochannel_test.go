package omniboxtest_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox/omniboxtest"
)

func newGoChannel(t *testing.T) *omniboxtest.GoChannel {
	t.Helper()
	g := omniboxtest.NewGoChannel(nil)
	t.Cleanup(func() { require.NoError(t, g.Close()) })
	return g
}

func messages(from, to int) []*message.Message {
	var msgs []*message.Message
	for i := from; i < to; i++ {
		msgs = append(msgs, message.NewMessage(strconv.Itoa(i), []byte(strconv.Itoa(i))))
	}
	return msgs
}

// receive reads n messages from ch, acking each, and returns their UUIDs.
func receive(t *testing.T, ch <-chan *message.Message, n int) []string {
	t.Helper()
	var got []string
	for range n {
		select {
		case msg, ok := <-ch:
			require.True(t, ok, "the channel closed after %d messages", len(got))
			got = append(got, msg.UUID)
			msg.Ack()
		case <-time.After(30 * time.Second):
			t.Fatalf("timed out after %d messages", len(got))
		}
	}
	return got
}

func uuids(from, to int) []string {
	var ids []string
	for i := from; i < to; i++ {
		ids = append(ids, strconv.Itoa(i))
	}
	return ids
}

func TestGoChannel_Order(t *testing.T) {
	t.Parallel()
	g := newGoChannel(t)
	ch, err := g.Subscribe(t.Context(), "orders")
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() { done <- g.Publish("orders", messages(0, 500)...) }()
	require.Equal(t, uuids(0, 500), receive(t, ch, 500))
	require.NoError(t, <-done)
}

// Publish returns only once the subscriber acked every message.
func TestGoChannel_PublishWaitsForAck(t *testing.T) {
	t.Parallel()
	g := newGoChannel(t)
	ch, err := g.Subscribe(t.Context(), "orders")
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() { done <- g.Publish("orders", messages(0, 2)...) }()
	first := <-ch
	second := make(chan *message.Message, 1)
	go func() { second <- <-ch }()
	select {
	case <-done:
		t.Fatal("Publish returned before the first message was acked")
	case <-second:
		t.Fatal("the second message came before the first was acked")
	case <-time.After(100 * time.Millisecond):
	}
	first.Ack()
	(<-second).Ack()
	require.NoError(t, <-done)
}

// Messages published before any subscriber are kept, in order, and come
// before those published later.
func TestGoChannel_KeepsMessagesWithoutSubscriber(t *testing.T) {
	t.Parallel()
	g := newGoChannel(t)
	require.NoError(t, g.Publish("orders", messages(0, 100)...)) // returns at once
	ch, err := g.Subscribe(t.Context(), "orders")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- g.Publish("orders", messages(100, 200)...) }()
	require.Equal(t, uuids(0, 200), receive(t, ch, 200))
	require.NoError(t, <-done)
}

func TestGoChannel_NackRedelivers(t *testing.T) {
	t.Parallel()
	g := newGoChannel(t)
	ch, err := g.Subscribe(t.Context(), "orders")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- g.Publish("orders", messages(0, 2)...) }()

	msg := <-ch
	require.Equal(t, "0", msg.UUID)
	msg.Nack()
	require.Equal(t, []string{"0", "1"}, receive(t, ch, 2))
	require.NoError(t, <-done)
}

// A message whose only subscriber left before acking it is kept for the
// next subscriber, with those after it.
func TestGoChannel_SubscriberLeaves(t *testing.T) {
	t.Parallel()
	g := newGoChannel(t)
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := g.Subscribe(ctx, "orders")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- g.Publish("orders", messages(0, 3)...) }()

	require.Equal(t, []string{"0"}, receive(t, ch, 1))
	msg := <-ch
	require.Equal(t, "1", msg.UUID)
	cancel() // leaves without acking "1"
	for range ch {
	}
	require.NoError(t, <-done)

	ch, err = g.Subscribe(t.Context(), "orders")
	require.NoError(t, err)
	require.Equal(t, []string{"1", "2"}, receive(t, ch, 2))
}

// Every subscriber of a topic gets every message; topics are independent.
func TestGoChannel_FanOut(t *testing.T) {
	t.Parallel()
	g := newGoChannel(t)
	a, err := g.Subscribe(t.Context(), "orders")
	require.NoError(t, err)
	b, err := g.Subscribe(t.Context(), "orders")
	require.NoError(t, err)
	other, err := g.Subscribe(t.Context(), "other")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- g.Publish("orders", messages(0, 50)...) }()
	var wg sync.WaitGroup
	var gotA, gotB []string
	wg.Go(func() { gotA = receive(t, a, 50) })
	wg.Go(func() { gotB = receive(t, b, 50) })
	wg.Wait()
	require.NoError(t, <-done)
	require.Equal(t, uuids(0, 50), gotA)
	require.Equal(t, uuids(0, 50), gotB)
	select {
	case msg := <-other:
		t.Fatalf("topic other got %s", msg.UUID)
	default:
	}
}

func TestGoChannel_Close(t *testing.T) {
	t.Parallel()
	g := omniboxtest.NewGoChannel(nil)
	ch, err := g.Subscribe(t.Context(), "orders")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- g.Publish("orders", messages(0, 2)...) }()
	<-ch // never acked

	require.NoError(t, g.Close())
	require.NoError(t, g.Close()) // idempotent
	_, ok := <-ch
	require.False(t, ok, "the subscriber's channel must close")
	require.ErrorIs(t, <-done, omniboxtest.ErrGoChannelClosed)
	require.ErrorIs(t, g.Publish("orders", messages(0, 1)...), omniboxtest.ErrGoChannelClosed)
	_, err = g.Subscribe(t.Context(), "orders")
	require.ErrorIs(t, err, omniboxtest.ErrGoChannelClosed)
}
