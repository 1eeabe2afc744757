package omnibox

import "hash/fnv"

// Partitions is the number of partitions of the outbox table. Events of one
// key always share a partition, a partition is leased to one relay at a time,
// and different partitions are relayed in parallel: so up to Partitions
// relays can work on one outbox at once while each key keeps its order.
const Partitions = 64

// PartitionOf returns the partition of an event, in [0, Partitions): the
// FNV-1a hash of its key, or of its ID when it has no key (events without a
// key are spread over all partitions). Stores call it on insert.
func PartitionOf(ev *Event) int {
	h := fnv.New32a()
	if ev.Key != "" {
		_, _ = h.Write([]byte(ev.Key))
	} else {
		_, _ = h.Write([]byte(ev.ID))
	}
	return int(h.Sum32() % Partitions)
}
