package omniboxtest

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrGoChannelClosed is returned by [GoChannel.Publish] and
// [GoChannel.Subscribe] after [GoChannel.Close].
var ErrGoChannelClosed = errors.New("omniboxtest: GoChannel is closed")

// GoChannel is an in-process Watermill Pub/Sub over Go channels for tests,
// like Watermill's gochannel.GoChannel, that keeps the order of what is
// published and loses nothing published before a subscriber exists. It
// implements message.Publisher and message.Subscriber: a Relay publishes to
// it, a Watermill router (with the inbox middleware) consumes from it.
//
// Watermill's GoChannel suits neither need in any configuration: by default
// it hands each message to its subscribers in a goroutine of its own (two
// messages of one key may arrive in either order) and drops messages
// published to a topic without subscribers; with Persistent it keeps them,
// but replays them to a new subscriber each in a goroutine of its own, out
// of order. This GoChannel instead:
//
//   - delivers one message at a time, in publish order: Publish hands a
//     message to every subscriber of its topic, waits until each acked it
//     (a nacked message is delivered again at once), and only then hands
//     over the next; concurrent Publish calls on one topic take turns, whole
//     calls at a time. The relay publishes a key's events in order, one
//     batch after the other, so subscribers see each key's events in the
//     order they were written.
//   - keeps what is published to a topic while it has no subscriber, in
//     memory and in order, and delivers it to the topic's next subscriber
//     before anything published later. A message whose every subscriber
//     went away before acking it is kept the same way.
//
// Every subscriber of a topic gets every message (there are no consumer
// groups). Publish returns once the subscribers acked, so a relay (or
// [Drain]) publishing to a topic whose subscriber does not ack waits for it.
type GoChannel struct {
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	topics  map[string]*goChannelTopic
	subs    sync.WaitGroup // subscribers' goroutines
}

// goChannelTopic is the state of one topic.
type goChannelTopic struct {
	// turn is held by a Publish call, or by a subscriber delivering the
	// backlog when it joins or leaving, so that they happen one at a time.
	turn sync.Mutex
	// subscribers of the topic; guarded by GoChannel.mu.
	subscribers []*goChannelSubscriber
	// backlog holds the messages no subscriber took, in order; guarded by
	// turn.
	backlog []*message.Message
}

type goChannelSubscriber struct {
	ctx context.Context
	out chan *message.Message
}

// NewGoChannel returns a [GoChannel]. logger receives its debug logs; nil
// discards them. Close it when done.
func NewGoChannel(logger watermill.LoggerAdapter) *GoChannel {
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &GoChannel{
		logger:  logger,
		closing: make(chan struct{}),
		topics:  map[string]*goChannelTopic{},
	}
}

// topic returns the state of topic, or ErrGoChannelClosed.
func (g *GoChannel) topic(topic string) (*goChannelTopic, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrGoChannelClosed
	}
	t, ok := g.topics[topic]
	if !ok {
		t = &goChannelTopic{}
		g.topics[topic] = t
	}
	return t, nil
}

// Publish delivers messages to every subscriber of topic, one at a time, in
// order, each after the subscribers acked the one before; the messages no
// subscriber took are kept for the topic's next subscriber. It returns when
// every message was acked or kept, and [ErrGoChannelClosed] after Close.
func (g *GoChannel) Publish(topic string, messages ...*message.Message) error {
	t, err := g.topic(topic)
	if err != nil {
		return err
	}
	copies := make([]*message.Message, len(messages))
	for i, msg := range messages {
		copies[i] = msg.Copy()
	}
	t.turn.Lock()
	defer t.turn.Unlock()
	return g.deliverLocked(topic, t, copies)
}

// deliverLocked delivers msgs in order to the subscribers of t, or appends
// them to its backlog from the first that no subscriber took on. While the
// backlog is not empty (a subscriber joined and has not received it yet),
// msgs join it, to be delivered after it. t.turn must be held.
func (g *GoChannel) deliverLocked(topic string, t *goChannelTopic, msgs []*message.Message) error {
	if len(t.backlog) > 0 {
		t.backlog = append(t.backlog, msgs...)
		return nil
	}
	for i, msg := range msgs {
		g.mu.Lock()
		closed, subscribers := g.closed, t.subscribers
		g.mu.Unlock()
		if closed {
			return ErrGoChannelClosed
		}
		taken := false
		for _, s := range subscribers {
			if g.deliver(s, msg) {
				taken = true
			}
		}
		if !taken {
			if g.isClosed() {
				return ErrGoChannelClosed
			}
			g.logger.Debug("No subscriber took the message; keeping it and the later ones for the next subscriber",
				watermill.LogFields{"topic": topic, "message_uuid": msg.UUID, "kept": len(msgs) - i})
			t.backlog = append(t.backlog, msgs[i:]...)
			return nil
		}
	}
	return nil
}

// deliver hands msg to s until s acks it, and reports whether it did: false
// when s went away or the GoChannel closed first.
func (g *GoChannel) deliver(s *goChannelSubscriber, msg *message.Message) bool {
	for {
		ctx, cancel := context.WithCancel(s.ctx)
		m := msg.Copy() // a fresh copy per attempt: acks and nacks are one-shot
		m.SetContext(ctx)
		select {
		case s.out <- m:
		case <-s.ctx.Done():
			cancel()
			return false
		case <-g.closing:
			cancel()
			return false
		}
		select {
		case <-m.Acked():
			cancel()
			return true
		case <-m.Nacked():
			cancel()
		case <-s.ctx.Done():
			cancel()
			return false
		case <-g.closing:
			cancel()
			return false
		}
	}
}

// Subscribe returns a channel of the messages published to topic from now
// on, which closes when ctx ends or the GoChannel closes. A subscriber joining
// a topic that kept messages for lack of subscribers receives them first.
// Ack each message to receive the next; a nacked message comes again.
func (g *GoChannel) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	t, err := g.topic(topic)
	if err != nil {
		return nil, err
	}
	s := &goChannelSubscriber{ctx: ctx, out: make(chan *message.Message)}
	// The subscriber counts at once: a Publish from now on delivers to it
	// (or, while a backlog waits, keeps its messages after the backlog).
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, ErrGoChannelClosed
	}
	g.subs.Add(1)
	t.subscribers = append(t.subscribers, s)
	g.mu.Unlock()

	// Delivering the backlog and leaving take the topic's turn, so they
	// wait for a Publish in progress; in a goroutine, so that Subscribe
	// never blocks.
	go func() {
		defer g.subs.Done()
		t.turn.Lock()
		backlog := t.backlog
		t.backlog = nil
		_ = g.deliverLocked(topic, t, backlog) // fails only when closed
		t.turn.Unlock()

		select {
		case <-ctx.Done():
		case <-g.closing:
		}
		// A Publish delivering to s notices the same and gives the turn up.
		t.turn.Lock()
		g.mu.Lock()
		for i, other := range t.subscribers {
			if other == s {
				t.subscribers = append(t.subscribers[:i:i], t.subscribers[i+1:]...)
				break
			}
		}
		g.mu.Unlock()
		close(s.out)
		t.turn.Unlock()
	}()
	return s.out, nil
}

func (g *GoChannel) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Close ends every subscription (closing the subscribers' channels) and the
// Publish calls waiting for an ack, and drops the messages kept for future
// subscribers. It returns when the subscribers' channels are closed. It is
// idempotent.
func (g *GoChannel) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	close(g.closing)
	g.mu.Unlock()
	g.subs.Wait()
	return nil
}
