package omnibox

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// failureClass says whose fault a failed publication is, which decides
// whether it costs the event an attempt.
type failureClass int

const (
	// failureUnknown: the publisher did not say. A batch of which nothing
	// went through on two keys or more is taken for an outage; a failure of
	// one key alone is charged.
	failureUnknown failureClass = iota
	// failureRejected: the broker refuses the event for good ([ErrRejected]):
	// charged, whatever else happens.
	failureRejected
	// failureUnavailable: the broker could not be reached or did not answer
	// in time ([ErrUnavailable]), or the call was given up at its deadline:
	// never charged.
	failureUnavailable
)

func classify(err error) failureClass {
	switch {
	case errors.Is(err, ErrRejected):
		return failureRejected
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return failureUnavailable
	}
	return failureUnknown
}

// publishResult is what the publisher did with a batch.
type publishResult struct {
	delivered []int64
	// failed holds the first failed event of each key that failed for a
	// reason that may be the event's own (rejected, or unknown).
	failed []failedPublish
	// failedKeys are the keys (an event without a key counts alone, see
	// keyOf) whose publication failed, whatever the reason.
	failedKeys map[string]bool
	// released are events given back without an attempt charged: not tried,
	// behind a failed event of their key, or failed because the broker was
	// unavailable.
	released []int64
	// unavailable reports a failure of the broker itself (ErrUnavailable, a
	// deadline, or failed single publishes of several keys in a row).
	unavailable bool
	err         error
}

type failedPublish struct {
	ev    ClaimedEvent
	err   error
	class failureClass
}

// isolateProbes is how many failed single-event publishes in a row, with none
// succeeding, end the isolation of a failed batch: the broker is down.
const isolateProbes = 3

// publish publishes the claimed events with one Publish call per topic, each
// in claim order (so per-key order holds within a topic), every message
// carrying a context that ends at deadline; a call still running shortly
// after the deadline is given up, its events released.
//
// A failed call that says which messages failed ([MessageErrors]) is taken
// at its word: per key, the events before the first failure are delivered,
// the first failure is charged or released by its class, and the later
// events of the key are released. A call that fails as a whole with
// [ErrUnavailable] releases its events. Otherwise its events are published
// one at a time to tell the events that fail from those that do not: keys are
// taken in random order (so a few poison events at the head cannot pass for
// a broker outage every time), the events of a key in order, and a key's
// events after its first failure are not tried. Three failures in a row with
// no success, or one that says the broker is unavailable, stop it.
func (r *Relay) publish(ctx context.Context, claimed []ClaimedEvent, deadline time.Time) publishResult {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var (
		res     publishResult
		topics  []string
		byTopic = make(map[string][]ClaimedEvent)
	)
	for _, ev := range claimed {
		if _, ok := byTopic[ev.Topic]; !ok {
			topics = append(topics, ev.Topic)
		}
		byTopic[ev.Topic] = append(byTopic[ev.Topic], ev)
	}
	res.delivered = make([]int64, 0, len(claimed))
	res.failedKeys = make(map[string]bool)
	for _, topic := range topics {
		events := byTopic[topic]
		if res.unavailable || ctx.Err() != nil {
			res.unavailable = true
			res.releaseAll(events)
			continue
		}
		err := r.publishCall(ctx, topic, events)
		if err == nil {
			for _, ev := range events {
				res.delivered = append(res.delivered, ev.Seq)
			}
			continue
		}
		err = fmt.Errorf("omnibox: publishing %d event(s) to topic %q: %w", len(events), topic, err)
		if res.err == nil {
			res.err = err
		}
		var me MessageErrors
		switch {
		case errors.As(err, &me):
			res.byMessage(events, me.MessageErrors(), err)
		case classify(err) == failureUnavailable:
			res.unavailable = true
			res.releaseAll(events)
			for _, ev := range events {
				res.failedKeys[keyOf(ev)] = true
			}
		case len(events) == 1:
			res.fail(events[0], err)
			if len(res.delivered) == 0 && len(res.failedKeys) >= isolateProbes {
				res.unavailable = true
			}
		default:
			r.isolate(ctx, topic, events, &res)
		}
	}
	return res
}

// publishCall publishes events to topic, each message carrying ctx, and
// gives the call up when it has not returned shortly after ctx's deadline.
func (r *Relay) publishCall(ctx context.Context, topic string, events []ClaimedEvent) error {
	msgs := make([]*message.Message, len(events))
	for i, ev := range events {
		msgs[i] = ToMessage(ev.Event)
		msgs[i].SetContext(ctx)
	}
	_, err := within(r, ctx, "publish", func(context.Context) (struct{}, error) {
		return struct{}{}, r.publisher.Publish(topic, msgs...)
	})
	return err
}

// byMessage sorts the events of a call by the per-message errors the
// publisher reported: per key, delivered up to the first failure, then
// released.
func (res *publishResult) byMessage(events []ClaimedEvent, errs map[string]error, callErr error) {
	for _, ev := range events {
		if res.failedKeys[keyOf(ev)] {
			res.released = append(res.released, ev.Seq)
			continue
		}
		err, failed := errs[ev.ID]
		if !failed {
			res.delivered = append(res.delivered, ev.Seq)
			continue
		}
		if err == nil {
			err = callErr
		}
		res.fail(ev, fmt.Errorf("omnibox: publishing event %q to topic %q: %w", ev.ID, ev.Topic, err))
	}
}

// fail records the first failure of ev's key: charged later unless the
// broker was unavailable.
func (res *publishResult) fail(ev ClaimedEvent, err error) {
	res.failedKeys[keyOf(ev)] = true
	class := classify(err)
	if class == failureUnavailable {
		res.unavailable = true
		res.released = append(res.released, ev.Seq)
		return
	}
	res.failed = append(res.failed, failedPublish{ev: ev, err: err, class: class})
}

// has reports whether an event of the batch failed with the class.
func (res *publishResult) has(class failureClass) bool {
	for _, f := range res.failed {
		if f.class == class {
			return true
		}
	}
	return false
}

func (res *publishResult) releaseAll(events []ClaimedEvent) {
	for _, ev := range events {
		res.released = append(res.released, ev.Seq)
	}
}

// isolate publishes events of a failed Publish call one at a time; see
// publish.
func (r *Relay) isolate(ctx context.Context, topic string, events []ClaimedEvent, res *publishResult) {
	var keys []string
	byKey := make(map[string][]ClaimedEvent)
	for _, ev := range events {
		k := keyOf(ev)
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], ev)
	}
	rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	failuresInARow := 0
	for _, k := range keys {
		for i, ev := range byKey[k] {
			if ctx.Err() != nil {
				res.unavailable = true // past the deadline
			}
			if res.unavailable || res.failedKeys[k] {
				res.released = append(res.released, ev.Seq)
				continue
			}
			if err := r.publishCall(ctx, topic, byKey[k][i:i+1]); err != nil {
				res.fail(ev, fmt.Errorf("omnibox: publishing event %q to topic %q: %w", ev.ID, topic, err))
				failuresInARow++
				if len(res.delivered) == 0 && failuresInARow >= isolateProbes {
					res.unavailable = true
				}
				for _, later := range byKey[k][i+1:] {
					res.released = append(res.released, later.Seq)
				}
				break
			}
			res.delivered = append(res.delivered, ev.Seq)
			failuresInARow = 0
		}
	}
}

// keyOf returns the ordering key of an event: its key, or for an event
// without one a name of its own.
func keyOf(ev ClaimedEvent) string {
	if ev.Key != "" {
		return "k:" + ev.Key
	}
	return "s:" + strconv.FormatInt(ev.Seq, 10)
}

// ToMessage converts an event into the Watermill message the relay publishes:
// the UUID is the event ID, the payload and metadata are the event's, and a
// non-empty key is added to the metadata as [MetadataKey].
func ToMessage(ev Event) *message.Message {
	msg := message.NewMessage(ev.ID, ev.Payload)
	if len(ev.Metadata) > 0 || ev.Key != "" {
		msg.Metadata = make(message.Metadata, len(ev.Metadata)+1)
		maps.Copy(msg.Metadata, ev.Metadata)
		if ev.Key != "" {
			msg.Metadata[MetadataKey] = ev.Key
		}
	}
	return msg
}

// cleanError renders err as text every store accepts: valid UTF-8, no NUL
// bytes, at most n bytes.
func cleanError(err error, n int) string {
	s := err.Error()
	if len(s) > n {
		s = s[:n]
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, ""), "\x00", "")
}
