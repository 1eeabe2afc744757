package omnibox

import (
	"log/slog"
	"reflect"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
)

// warnGoChannel logs a warning when publisher is a Watermill GoChannel that
// is not configured to keep per-key order and to keep what is published
// before a subscriber exists: the natural test double, which in its default
// config breaks both promises of the relay.
func warnGoChannel(log *slog.Logger, relayID string, publisher message.Publisher) {
	gc, ok := publisher.(*gochannel.GoChannel)
	if !ok || gc == nil {
		return
	}
	block, persistent, known := goChannelConfig(gc)
	if known && block && persistent {
		return
	}
	attrs := []any{slog.String("relay", relayID)}
	if known {
		attrs = append(attrs, slog.Bool("BlockPublishUntilSubscriberAck", block), slog.Bool("Persistent", persistent))
	} else {
		attrs = append(attrs, slog.String("config", "unknown (this Watermill's GoChannel could not be inspected)"))
	}
	log.Warn("omnibox relay publishes to a Watermill GoChannel that may reorder or drop events: "+
		"without BlockPublishUntilSubscriberAck it delivers each message in a goroutine of its own, so the events of a key can arrive out of order; "+
		"without Persistent it drops what is published before a subscriber exists. "+
		"Use gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true, Persistent: true}, logger), "+
		"or omniboxtest.NewGoChannel, which is configured so", attrs...)
}

// goChannelConfig reads the two settings of gc's unexported config that
// decide order and loss. known is false when this version of Watermill keeps
// them elsewhere.
func goChannelConfig(gc *gochannel.GoChannel) (block, persistent, known bool) {
	config := reflect.ValueOf(gc).Elem().FieldByName("config")
	if !config.IsValid() || config.Type() != reflect.TypeFor[gochannel.Config]() {
		return false, false, false
	}
	return config.FieldByName("BlockPublishUntilSubscriberAck").Bool(), config.FieldByName("Persistent").Bool(), true
}
