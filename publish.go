package omnibox

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
)

// publishResult is what the publisher did with a batch.
type publishResult struct {
	delivered []int64
	failed    []failedPublish
	// failedKeys counts the distinct keys (an event without a key counts
	// alone) whose publication failed.
	failedKeys int
	// released are events not tried, or not tried alone, because an earlier
	// event of their key failed or the broker looked down.
	released []int64
	err      error
}

type failedPublish struct {
	ev  ClaimedEvent
	err error
}

// isolateProbes is how many failed single-event publishes in a row, with none
// succeeding, end the isolation of a failed batch: the broker is down.
const isolateProbes = 3

// publish publishes the claimed events with one Publish call per topic, each
// in claim order (so per-key order holds within a topic). When a call fails,
// its events are published one at a time to tell the events that fail from
// those that do not: keys are taken in random order (so a few poison events
// at the head cannot pass for a broker outage every time), the events of a
// key in order, and a key's events after its first failure are not tried.
// Three failures in a row with no success stop it: the broker is down.
func (r *Relay) publish(claimed []ClaimedEvent) publishResult {
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
	failedKeys := make(map[string]bool)
	down := false
	for _, topic := range topics {
		events := byTopic[topic]
		if down {
			for _, ev := range events {
				res.released = append(res.released, ev.Seq)
			}
			continue
		}
		msgs := make([]*message.Message, len(events))
		for j, ev := range events {
			msgs[j] = ToMessage(ev.Event)
		}
		err := r.publisher.Publish(topic, msgs...)
		if err == nil {
			for _, ev := range events {
				res.delivered = append(res.delivered, ev.Seq)
			}
			continue
		}
		err = fmt.Errorf("omnibox: publishing %d event(s) to topic %q: %w", len(msgs), topic, err)
		if res.err == nil {
			res.err = err
		}
		if len(events) == 1 {
			res.failed = append(res.failed, failedPublish{ev: events[0], err: err})
			failedKeys[keyOf(events[0])] = true
			down = len(res.delivered) == 0 && len(failedKeys) >= isolateProbes
			continue
		}
		down = r.isolate(topic, events, &res, failedKeys)
	}
	res.failedKeys = len(failedKeys)
	return res
}

// isolate publishes events of a failed Publish call one at a time; see
// publish. It reports whether the broker looks down.
func (r *Relay) isolate(topic string, events []ClaimedEvent, res *publishResult, failedKeys map[string]bool) bool {
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
	failuresInARow, down := 0, false
	for _, k := range keys {
		for i, ev := range byKey[k] {
			if down || failedKeys[k] {
				res.released = append(res.released, ev.Seq)
				continue
			}
			if err := r.publisher.Publish(topic, ToMessage(ev.Event)); err != nil {
				res.failed = append(res.failed, failedPublish{ev: ev, err: fmt.Errorf("omnibox: publishing event %q to topic %q: %w", ev.ID, topic, err)})
				failedKeys[k] = true
				failuresInARow++
				down = len(res.delivered) == 0 && failuresInARow >= isolateProbes
				for _, later := range byKey[k][i+1:] {
					res.released = append(res.released, later.Seq)
				}
				break
			}
			res.delivered = append(res.delivered, ev.Seq)
			failuresInARow = 0
		}
	}
	return down
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

// bytes, at most n bytes.
func cleanError(err error, n int) string {
	s := err.Error()
	if len(s) > n {
		s = s[:n]
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, ""), "\x00", "")
}
