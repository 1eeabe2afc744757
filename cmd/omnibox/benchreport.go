package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/omnibox-go/omnibox"
)

// report prints the medians, the ratios (each the median of the per-run
// ratios) and the targets.
func (b *bench) report(w io.Writer, targets []*benchTarget) error {
	s := b.samples
	fmt.Fprintf(w, "medians of %d runs; ratios are medians of per-run ratios\n", b.cfg.runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	flush := func() error {
		err := tw.Flush()
		fmt.Fprintln(w)
		return err
	}
	val := func(k benchKey, format string) string {
		if v, ok := s.median(k); ok {
			return fmt.Sprintf(format, v)
		}
		if note := s.notes[k]; note != "" {
			return "skipped"
		}
		return "-"
	}
	ratio := func(num, den benchKey) string {
		if v, ok := s.ratio(num, den); ok {
			return strconv.FormatFloat(v, 'f', 2, 64)
		}
		return "-"
	}
	left := func(cells ...string) string { return strings.Join(cells, "\t") + "\t" }

	if b.cfg.has("ceiling") {
		fmt.Fprintln(w, "\nraw ceilings: bare loops, batches of 500 — db: 4 workers claiming (SKIP LOCKED), reading and deleting; kafka: franz-go ProduceSync with the publisher's options; gochannel: Publish")
		fmt.Fprintln(tw, left("database", "broker", "N", "rate", "unit"))
		for _, t := range targets {
			for _, n := range b.cfg.backlogs {
				fmt.Fprintln(tw, left(t.name, "-", strconv.Itoa(n), val(benchKey{t.name, "-", "db ceiling", "", n}, "%.0f"), "rows/s"))
				for _, broker := range b.cfg.brokers {
					fmt.Fprintln(tw, left(t.name, broker, strconv.Itoa(n), val(benchKey{t.name, broker, "broker ceiling", "", n}, "%.0f"), "msg/s"))
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}

	if b.cfg.has("drain") || b.cfg.has("forwarder") {
		fmt.Fprintln(w, "drain: events/s until the outbox is empty; where the relays' time went (share of lanes × wall time: relays × Concurrency batch loops)")
		fmt.Fprintln(tw, left("database", "broker", "backlog", "relays", "events/s", "events/claim", "empty claims", "in Claim", "in Publish", "in Complete"))
		for _, t := range targets {
			for _, broker := range b.cfg.brokers {
				for _, n := range b.cfg.backlogs {
					if b.cfg.has("drain") {
						for _, k := range b.cfg.cases() {
							key := benchKey{t.name, broker, "drain", k.String(), n}
							sub := func(metric, format string) string {
								return val(benchKey{t.name, broker, metric, k.String(), n}, format)
							}
							relays := strconv.Itoa(k.relays)
							if k.lanes != omnibox.DefaultConcurrency {
								relays += fmt.Sprintf(" (Concurrency %d)", k.lanes)
							}
							fmt.Fprintln(tw, left(t.name, broker, strconv.Itoa(n), relays, val(key, "%.0f"),
								sub("drain batch", "%.0f"), sub("drain empty claims", "%.0f"),
								pct(s, benchKey{t.name, broker, "drain claim share", k.String(), n}),
								pct(s, benchKey{t.name, broker, "drain publish share", k.String(), n}),
								pct(s, benchKey{t.name, broker, "drain complete share", k.String(), n})))
						}
					}
					if b.cfg.has("forwarder") && t.dialect != "sqlite" {
						fmt.Fprintln(tw, left(t.name, broker, strconv.Itoa(n), "Forwarder", val(benchKey{t.name, broker, "forwarder", "", n}, "%.0f"), "", "", "", "", ""))
					}
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
		var notes []string
		for k, note := range s.notes {
			notes = append(notes, fmt.Sprintf("  %s %s %s %d: %s", k.db, k.broker, k.metric, k.n, note))
		}
		slices.Sort(notes)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
		if len(notes) > 0 {
			fmt.Fprintln(w)
		}
	}

	if b.cfg.has("drain") {
		fmt.Fprintln(w, "drain ratios")
		fmt.Fprintln(tw, left("database", "broker", "ratio", "N", "value"))
		first := b.cfg.backlogs[0]
		for _, t := range targets {
			for _, broker := range b.cfg.brokers {
				drain := func(k drainCase, n int) benchKey { return benchKey{t.name, broker, "drain", k.String(), n} }
				for _, k := range b.cfg.cases() {
					for _, n := range b.cfg.backlogs[1:] {
						fmt.Fprintln(tw, left(t.name, broker, fmt.Sprintf("%s: drain %d / drain %d", k, n, first), "", ratio(drain(k, n), drain(k, first))))
					}
				}
				for _, n := range b.cfg.backlogs {
					for _, k := range b.cfg.cases() {
						if k1 := (drainCase{b.cfg.relays[0], k.lanes}); k.relays != k1.relays {
							fmt.Fprintln(tw, left(t.name, broker, fmt.Sprintf("%s / %s", k, k1), strconv.Itoa(n), ratio(drain(k, n), drain(k1, n))))
						}
						if k1 := (drainCase{k.relays, b.cfg.lanes[0]}); k.lanes != k1.lanes {
							fmt.Fprintln(tw, left(t.name, broker, fmt.Sprintf("%s / %s", k, k1), strconv.Itoa(n), ratio(drain(k, n), drain(k1, n))))
						}
					}
					if b.cfg.has("forwarder") && t.dialect != "sqlite" {
						for _, k := range b.cfg.cases() {
							fmt.Fprintln(tw, left(t.name, broker, k.String()+" / Forwarder", strconv.Itoa(n), ratio(drain(k, n), benchKey{t.name, broker, "forwarder", "", n})))
						}
					}
					if b.cfg.has("ceiling") {
						for _, k := range b.cfg.cases() {
							fmt.Fprintln(tw, left(t.name, broker, k.String()+" / min(db, broker ceiling)", strconv.Itoa(n), b.ceilingRatio(t, broker, k, n)))
						}
					}
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}

	if b.cfg.has("latency") {
		fmt.Fprintf(w, "latency: commit (InTx returned) → Publish returned, ms; %d paced writers, one event per transaction, for %s per rate\n", b.cfg.writers, b.cfg.latencyFor)
		fmt.Fprintln(tw, left("database", "broker", "mode", "rate", "achieved", "p50", "p99", "max"))
		for _, t := range targets {
			for _, broker := range b.cfg.brokers {
				for _, mode := range b.cfg.modes {
					for _, rate := range b.cfg.rates {
						k := func(metric string) benchKey { return benchKey{t.name, broker, metric, mode, rate} }
						if _, ok := s.median(k("latency p99")); !ok {
							continue
						}
						fmt.Fprintln(tw, left(t.name, broker, mode, strconv.Itoa(rate), val(k("latency achieved rate"), "%.0f"),
							val(k("latency p50"), "%.1f"), val(k("latency p99"), "%.1f"), val(k("latency max"), "%.1f")))
					}
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}

	if b.cfg.has("writer") {
		fmt.Fprintf(w, "writer cost: %d writers committing one business row per transaction, as fast as they can, for %s\n", b.cfg.writers, b.cfg.writerFor)
		fmt.Fprintln(tw, left("database", "variant", "commits/s", "vs business (a)", "vs outbox (b)"))
		for _, t := range targets {
			for _, variant := range b.cfg.variants {
				k := benchKey{t.name, "-", "writer", variant, b.cfg.writers}
				if _, ok := s.median(k); !ok {
					continue
				}
				fmt.Fprintln(tw, left(t.name, variant+" "+writerLetter(variant), val(k, "%.0f"),
					ratio(k, benchKey{t.name, "-", "writer", "business", b.cfg.writers}),
					ratio(k, benchKey{t.name, "-", "writer", "outbox", b.cfg.writers})))
			}
		}
		if err := flush(); err != nil {
			return err
		}
	}
	if len(s.failed) > 0 {
		fmt.Fprintln(w, "failed measurements (left out above)")
		for _, f := range s.failed {
			fmt.Fprintln(w, "  "+f)
		}
		fmt.Fprintln(w)
	}
	return b.reportTargets(w, targets)
}

func writerLetter(variant string) string {
	switch variant {
	case "business":
		return "(a)"
	case "outbox":
		return "(b)"
	case "notify-tx":
		return "(c)"
	case "notifier":
		return "(d)"
	}
	return ""
}

func pct(s *benchSamples, k benchKey) string {
	if v, ok := s.median(k); ok {
		return fmt.Sprintf("%.0f %%", 100*v)
	}
	return "-"
}

// ceilingRatio is the median over runs of drain / min(db ceiling, broker
// ceiling), all of the same run and N.
func (b *bench) ceilingRatio(t *benchTarget, broker string, k drainCase, n int) string {
	v, ok := b.ceilingRatioValue(t, broker, k, n)
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func (b *bench) ceilingRatioValue(t *benchTarget, broker string, k drainCase, n int) (float64, bool) {
	s := b.samples
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.values[benchKey{t.name, broker, "drain", k.String(), n}]
	db := s.values[benchKey{t.name, "-", "db ceiling", "", n}]
	br := s.values[benchKey{t.name, broker, "broker ceiling", "", n}]
	ceiling := map[int]float64{}
	for run, x := range db {
		if y, ok := br[run]; ok {
			ceiling[run] = min(x, y)
		}
	}
	return perRunRatio(d, ceiling)
}

// reportTargets prints the targets of issue 5 that the run measured, each
// met or not.
func (b *bench) reportTargets(w io.Writer, targets []*benchTarget) error {
	s := b.samples
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "targets (issue 5)")
	fmt.Fprintln(tw, "target\tdatabase\tbroker\tcase\tvalue\tverdict")
	row := func(target string, t *benchTarget, broker, what string, v float64, met bool) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%s\n", target, t.name, broker, what, v, verdict(met))
	}
	first, last := b.cfg.backlogs[0], b.cfg.backlogs[len(b.cfg.backlogs)-1]
	for _, t := range targets {
		for _, broker := range b.cfg.brokers {
			for _, k := range b.cfg.cases() {
				drain := func(n int) benchKey { return benchKey{t.name, broker, "drain", k.String(), n} }
				if slices.Contains(b.cfg.backlogs, 100_000) {
					if v, ok := s.ratio(drain(100_000), benchKey{t.name, broker, "forwarder", "", 100_000}); ok {
						row("drain >= 10x Forwarder at 100k", t, broker, k.String()+" / Forwarder", v, v >= 10)
					}
				}
				if last != first {
					if v, ok := s.ratio(drain(last), drain(first)); ok {
						row(fmt.Sprintf("drain %d / %d within ±20 %%", last, first), t, broker, k.String(), v, v >= 0.8 && v <= 1.2)
					}
				}
			}
			if t.dialect == "postgres" && broker == "kafka" && slices.Contains(b.cfg.relays, 1) {
				for _, lanes := range b.cfg.lanes {
					k := drainCase{1, lanes}
					for _, n := range b.cfg.backlogs {
						if v, ok := b.ceilingRatioValue(t, broker, k, n); ok {
							row(">= 1/2 of raw ceiling, one relay", t, broker, fmt.Sprintf("%s, %d: drain / min(db, broker ceiling)", k, n), v, v >= 0.5)
						}
					}
				}
			}
			if t.dialect == "postgres" && slices.Contains(b.cfg.rates, 1000) {
				for _, mode := range b.cfg.modes {
					if v, ok := s.median(benchKey{t.name, broker, "latency p99", mode, 1000}); ok {
						row("p99 <= 25 ms at 1,000 events/s", t, broker, mode+", p99 ms", v, v <= 25)
					}
				}
			}
		}
		if t.dialect == "postgres" {
			for _, variant := range []string{"wake", "notify-tx", "notifier"} {
				if v, ok := s.ratio(benchKey{t.name, "-", "writer", variant, b.cfg.writers}, benchKey{t.name, "-", "writer", "outbox", b.cfg.writers}); ok {
					row("writers lose <= 10 %", t, "-", variant+" / outbox (b)", v, v >= 0.9)
				}
			}
		}
	}
	return tw.Flush()
}
