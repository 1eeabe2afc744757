// Package docsnippets keeps the Go snippets of the documentation equal to
// compiled code.
//
// Every ```go fence of a markdown file must be preceded, on the line just
// before it, by a marker naming a region of a Go file:
//
//	<!-- snippet: examples/quickstart/main.go quickstart -->
//
// The region is the lines between `// snippet-start: quickstart` and
// `// snippet-end: quickstart` in that file (the marker lines and any other
// snippet marker lines inside excluded), dedented by their common leading
// tabs, blank lines at its start and end dropped. [Check] reports fences without a marker, markers naming a file or
// region that does not exist (or a region defined twice), and fences whose
// content differs from their region; [Update] rewrites the fences from the
// code, never the code. The repository's test (TestSnippets) runs them on
// every markdown file; `go test ./internal/docsnippets -update` updates.
package docsnippets

import (
	"bytes"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// FixCommand is the command that rewrites the fences from the code.
const FixCommand = "go test ./internal/docsnippets -update"

var (
	markerRE = regexp.MustCompile(`^\s*<!--\s*snippet:\s*(\S+)\s+(\S+)\s*-->\s*$`)
	// A line that looks like a marker but does not parse as one.
	markerishRE = regexp.MustCompile(`<!--\s*snippet:`)
	fenceRE     = regexp.MustCompile("^( *)(`{3,}|~{3,})\\s*([^`\\s]*)")
	regionRE    = regexp.MustCompile(`^\s*// snippet-(start|end):\s*(\S*)\s*$`)
)

// Problem is one thing wrong with one markdown file's snippets.
type Problem struct {
	File string // the markdown file, relative to the repository root
	Line int    // 1-based line of the fence (or of the marker)
	Msg  string // what is wrong and how to fix it
}

func (p Problem) String() string { return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg) }

// fence is one fenced code block of a markdown file.
type fence struct {
	lang      string
	indent    string // the opening fence's indentation, removed from the content
	open      int    // 0-based line index of the opening fence
	close     int    // 0-based line index of the closing fence (len(lines) when unclosed)
	closed    bool
	content   []string // the lines between the fences, the indentation removed
	markerRef *ref     // the marker on the line before, if any
	markerBad string   // a line before that looks like a marker but is malformed
}

// ref names a region: a Go file relative to the root and a region name.
type ref struct{ path, name string }

// isGo reports whether a fence's info string names Go.
func isGo(lang string) bool { return lang == "go" || lang == "golang" }

// parseFences finds the fenced code blocks of a markdown file's lines.
func parseFences(lines []string) []fence {
	var out []fence
	for i := 0; i < len(lines); i++ {
		m := fenceRE.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		f := fence{lang: strings.ToLower(m[3]), indent: m[1], open: i, close: len(lines)}
		if i > 0 {
			if mm := markerRE.FindStringSubmatch(lines[i-1]); mm != nil {
				f.markerRef = &ref{path: mm[1], name: mm[2]}
			} else if markerishRE.MatchString(lines[i-1]) {
				f.markerBad = strings.TrimSpace(lines[i-1])
			}
		}
		ch, n := m[2][0], len(m[2])
		for j := i + 1; j < len(lines); j++ {
			t := strings.TrimSpace(lines[j])
			if len(t) >= n && strings.Trim(t, string(ch)) == "" {
				f.close, f.closed = j, true
				break
			}
			f.content = append(f.content, strings.TrimPrefix(lines[j], f.indent))
		}
		out = append(out, f)
		i = f.close
	}
	return out
}

// region is one snippet region of a Go file.
type region struct {
	lines []string // dedented, marker lines excluded
	line  int      // 1-based line of the start marker
}

// parseRegions reads the snippet regions of a Go file's source. Errors name
// the file and line: an end without a start, a start without an end, a name
// defined twice, a marker without a name.
func parseRegions(path string, src []byte) (map[string]region, error) {
	lines := splitLines(string(src))
	type open struct {
		start int
		body  []string
	}
	opened := map[string]*open{}
	var order []string // names in the order their regions opened, to keep bodies apart
	out := map[string]region{}
	var errs []error
	for i, l := range lines {
		m := regionRE.FindStringSubmatch(l)
		if m == nil {
			for _, name := range order {
				if o := opened[name]; o != nil {
					o.body = append(o.body, l)
				}
			}
			continue
		}
		kind, name := m[1], m[2]
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("%s:%d: snippet-%s without a name", path, i+1, kind))
		case kind == "start":
			if o, ok := opened[name]; ok && o != nil {
				errs = append(errs, fmt.Errorf("%s:%d: region %q started again before its snippet-end (started at line %d)", path, i+1, name, o.start+1))
				continue
			}
			if r, ok := out[name]; ok {
				errs = append(errs, fmt.Errorf("%s:%d: region %q is defined twice (also at line %d); rename one", path, i+1, name, r.line))
				continue
			}
			opened[name] = &open{start: i}
			order = append(order, name)
		default: // end
			o := opened[name]
			if o == nil {
				errs = append(errs, fmt.Errorf("%s:%d: snippet-end: %s without a snippet-start", path, i+1, name))
				continue
			}
			out[name] = region{lines: trimBlank(dedent(o.body)), line: o.start + 1}
			opened[name] = nil
		}
	}
	for _, name := range order {
		if o := opened[name]; o != nil {
			errs = append(errs, fmt.Errorf("%s:%d: region %q has no snippet-end", path, o.start+1, name))
		}
	}
	return out, errors.Join(errs...)
}

// dedent removes the leading tabs that all non-blank lines share; blank
// lines become empty.
func dedent(lines []string) []string {
	common := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, "\t"))
		if common < 0 || n < common {
			common = n
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		out[i] = strings.TrimRight(l[common:], " \t")
	}
	return out
}

// trimBlank drops the empty lines at the start and the end of lines.
func trimBlank(lines []string) []string {
	for len(lines) > 0 && lines[0] == "" {
		lines = lines[1:]
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// splitLines splits s into lines without their line endings; a final line
// ending does not make an extra empty line.
func splitLines(s string) []string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Source reads the Go files that markers name. It caches parsed files.
type Source struct {
	Root  string // the repository root
	files map[string]sourceFile
}

type sourceFile struct {
	regions map[string]region
	err     error
}

// region returns the named region of the Go file at path (relative to the
// root) or an error saying what is missing.
func (s *Source) region(r ref) (region, error) {
	if s.files == nil {
		s.files = map[string]sourceFile{}
	}
	sf, ok := s.files[r.path]
	if !ok {
		sf = s.load(r.path)
		s.files[r.path] = sf
	}
	if sf.err != nil {
		return region{}, sf.err
	}
	reg, ok := sf.regions[r.name]
	if !ok {
		return region{}, fmt.Errorf("%s has no region %q: add `// snippet-start: %s` and `// snippet-end: %s` around the code, or fix the marker", r.path, r.name, r.name, r.name)
	}
	return reg, nil
}

func (s *Source) load(path string) sourceFile {
	if filepath.IsAbs(path) || strings.HasPrefix(filepath.Clean(path), "..") || !strings.HasSuffix(path, ".go") {
		return sourceFile{err: fmt.Errorf("the marker must name a .go file relative to the repository root, not %q", path)}
	}
	src, err := os.ReadFile(filepath.Join(s.Root, filepath.FromSlash(path)))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return sourceFile{err: fmt.Errorf("%s does not exist (paths are relative to the repository root)", path)}
		}
		return sourceFile{err: err}
	}
	f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ParseComments)
	if err != nil {
		return sourceFile{err: fmt.Errorf("%s does not parse as Go: %w", path, err)}
	}
	for _, cg := range f.Comments {
		for _, c := range cg.List {
			if strings.TrimSpace(c.Text) == "//go:build ignore" {
				return sourceFile{err: fmt.Errorf("%s is excluded from the build (//go:build ignore): snippets must come from compiled code", path)}
			}
		}
	}
	regions, err := parseRegions(path, src)
	return sourceFile{regions: regions, err: err}
}

// Check reports the problems of one markdown file (rel is its path relative
// to the root, content its text).
func Check(src *Source, rel string, content []byte) []Problem {
	_, probs := process(src, rel, content, false)
	return probs
}

// Update returns the markdown file with every marked ```go fence rewritten
// from its region, and the problems it could not fix (fences without a
// marker, missing regions). The Go files are only read.
func Update(src *Source, rel string, content []byte) ([]byte, []Problem) {
	return process(src, rel, content, true)
}

func process(src *Source, rel string, content []byte, update bool) ([]byte, []Problem) {
	lines := splitLines(string(content))
	fences := parseFences(lines)
	var probs []Problem
	add := func(line int, format string, args ...any) {
		probs = append(probs, Problem{File: rel, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	// Markers not followed by a fence.
	fenceAfter := map[int]bool{}
	for _, f := range fences {
		fenceAfter[f.open-1] = true
	}
	inFence := map[int]bool{}
	for _, f := range fences {
		for j := f.open; j <= f.close && j < len(lines); j++ {
			inFence[j] = true
		}
	}
	for i, l := range lines {
		if markerishRE.MatchString(l) && !inFence[i] && !fenceAfter[i] {
			add(i+1, "snippet marker not followed by a ```go fence on the next line: put the marker right above the fence, or delete it")
		}
	}
	var out []string
	next := 0
	for _, f := range fences {
		if !isGo(f.lang) {
			if f.markerRef != nil {
				add(f.open+1, "snippet marker above a %q fence: snippets are ```go fences", f.lang)
			}
			continue
		}
		if !f.closed {
			add(f.open+1, "```go fence is never closed")
			continue
		}
		if f.markerRef == nil {
			if f.markerBad != "" {
				add(f.open, "malformed snippet marker %q: write <!-- snippet: PATH/FROM/ROOT.go NAME -->", f.markerBad)
				continue
			}
			add(f.open+1, "```go fence without a snippet marker: put the code in an Example function or an examples/ program between `// snippet-start: NAME` and `// snippet-end: NAME`, and write <!-- snippet: PATH NAME --> on the line above the fence")
			continue
		}
		reg, err := src.region(*f.markerRef)
		if err != nil {
			add(f.open, "%v", err)
			continue
		}
		if slices.Equal(f.content, reg.lines) {
			continue
		}
		if update {
			out = append(out, lines[next:f.open+1]...)
			for _, l := range reg.lines {
				if l == "" {
					out = append(out, "")
				} else {
					out = append(out, f.indent+l)
				}
			}
			next = f.close
			continue
		}
		add(f.open+1, "the fence differs from %s region %q (line %d); if the code is right, run `%s`; otherwise change the code.\n%s",
			f.markerRef.path, f.markerRef.name, reg.line, FixCommand, Diff(f.content, reg.lines))
	}
	if !update || next == 0 {
		return content, probs
	}
	out = append(out, lines[next:]...)
	var b bytes.Buffer
	for _, l := range out {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes(), probs
}
