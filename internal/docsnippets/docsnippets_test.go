package docsnippets_test

import (
	"bytes"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omnibox-go/omnibox/internal/docsnippets"
)

var update = flag.Bool("update", false, "rewrite the markdown fences from the code regions they name (never the code)")

// exempt lists markdown files that are not checked at all, each with the
// reason. Every other *.md file of the repository is checked.
var exempt = map[string]string{}

// notConverted lists markdown files whose ```go fences may still lack a
// snippet marker, each with the reason; the other checks still apply to
// them. The list only shrinks: an entry whose file has no unmarked fence
// left fails the test.
var notConverted = map[string]string{
	"README.md":               "being converted (helper docs, issue 11)",
	"docs/getting-started.md": "being converted (helper docs, issue 11)",
	"docs/inbox.md":           "being converted (helper pub, issue 11)",
}

// repoRoot is the directory of the module's go.mod, found upwards from the
// test's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "no go.mod above the test's directory")
		dir = parent
	}
}

// markdownFiles returns every *.md file under root (relative, slash
// separated), skipping only the .git directory.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".md") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	require.NoError(t, err)
	sort.Strings(out)
	return out
}

const missingMarker = "```go fence without a snippet marker"

// TestSnippets checks every ```go fence of the repository's markdown files
// against the code region its marker names. With -update it rewrites the
// fences from the code first.
func TestSnippets(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	files := markdownFiles(t, root)
	require.Contains(t, files, "README.md", "the walk must find the README")
	for name := range exempt {
		require.Contains(t, files, name, "exempt lists a file that does not exist")
	}
	for name := range notConverted {
		require.Contains(t, files, name, "notConverted lists a file that does not exist")
	}
	src := &docsnippets.Source{Root: root}
	for _, rel := range files {
		if reason, ok := exempt[rel]; ok {
			t.Logf("%s: not checked: %s", rel, reason)
			continue
		}
		path := filepath.Join(root, filepath.FromSlash(rel))
		content, err := os.ReadFile(path)
		require.NoError(t, err)
		var probs []docsnippets.Problem
		if *update {
			var updated []byte
			updated, probs = docsnippets.Update(src, rel, content)
			if !bytes.Equal(updated, content) {
				require.NoError(t, os.WriteFile(path, updated, 0o644))
				t.Logf("%s: fences rewritten from the code", rel)
			}
		} else {
			probs = docsnippets.Check(src, rel, content)
		}
		unmarked := 0
		for _, p := range probs {
			if _, ok := notConverted[rel]; ok && strings.HasPrefix(p.Msg, missingMarker) {
				unmarked++
				continue
			}
			t.Error(p.String())
		}
		if _, ok := notConverted[rel]; ok && unmarked == 0 {
			t.Errorf("%s: every ```go fence has a marker now: delete it from notConverted", rel)
		}
	}
}

// fixture writes files (relative path → content) under a new temporary
// root and returns the root.
func fixture(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		path := filepath.Join(root, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
	return root
}

const fixtureGo = `package demo

import "fmt"

func Example() {
	// snippet-start: hello

	msg := "hello"
	if msg != "" {
		fmt.Println(msg)
	}
	// snippet-start: inner
	fmt.Println("inner")
	// snippet-end: inner

	// snippet-end: hello
	// Output:
	// hello
	// inner
}
`

// messages returns the problems' texts.
func messages(probs []docsnippets.Problem) []string {
	var out []string
	for _, p := range probs {
		out = append(out, p.String())
	}
	return out
}

func TestCheckMatchingFences(t *testing.T) {
	t.Parallel()
	root := fixture(t, map[string]string{"demo/example_test.go": fixtureGo})
	md := "# Demo\n\n<!-- snippet: demo/example_test.go hello -->\n```go\n" +
		"msg := \"hello\"\nif msg != \"\" {\n\tfmt.Println(msg)\n}\nfmt.Println(\"inner\")\n```\n\n" +
		"1. A step:\n\n   <!-- snippet: demo/example_test.go inner -->\n   ```go\n   fmt.Println(\"inner\")\n   ```\n\n" +
		"```sh\ngo test ./...\n```\n\n" +
		"````markdown\n```go\nnot a snippet: inside another fence\n```\n````\n"
	probs := docsnippets.Check(&docsnippets.Source{Root: root}, "README.md", []byte(md))
	require.Empty(t, messages(probs))
}

func TestCheckMismatch(t *testing.T) {
	t.Parallel()
	root := fixture(t, map[string]string{"demo/example_test.go": fixtureGo})
	md := "<!-- snippet: demo/example_test.go inner -->\n```go\nfmt.Println(\"outer\")\n```\n"
	probs := docsnippets.Check(&docsnippets.Source{Root: root}, "docs/a.md", []byte(md))
	require.Len(t, probs, 1)
	require.Equal(t, 2, probs[0].Line)
	require.Contains(t, probs[0].Msg, `differs from demo/example_test.go region "inner"`)
	require.Contains(t, probs[0].Msg, "- fmt.Println(\"outer\")\n+ fmt.Println(\"inner\")\n")
	require.Contains(t, probs[0].Msg, docsnippets.FixCommand)
}

func TestCheckMissingMarker(t *testing.T) {
	t.Parallel()
	root := fixture(t, map[string]string{"demo/example_test.go": fixtureGo})
	md := "Text.\n\n```go\nfmt.Println(\"inner\")\n```\n\n<!-- snippet: demo/example_test.go inner -->\n\n```go\nfmt.Println(\"inner\")\n```\n"
	probs := docsnippets.Check(&docsnippets.Source{Root: root}, "docs/a.md", []byte(md))
	msgs := messages(probs)
	require.Len(t, msgs, 3, msgs)
	require.Contains(t, msgs[0], "docs/a.md:7: snippet marker not followed by a ```go fence")
	require.Contains(t, msgs[1], "docs/a.md:3: ```go fence without a snippet marker")
	require.Contains(t, msgs[2], "docs/a.md:9: ```go fence without a snippet marker", "a blank line between marker and fence does not count")
}

func TestCheckMissingFileAndRegion(t *testing.T) {
	t.Parallel()
	root := fixture(t, map[string]string{
		"demo/example_test.go": fixtureGo,
		"demo/twice.go":        "package demo\n\n// snippet-start: a\nvar x = 1\n// snippet-end: a\n\n// snippet-start: a\nvar y = 2\n// snippet-end: a\n",
		"demo/open.go":         "package demo\n\n// snippet-start: a\nvar x = 1\n",
		"demo/ignored.go":      "//go:build ignore\n\npackage demo\n\n// snippet-start: a\nvar x = 1\n// snippet-end: a\n",
	})
	md := "<!-- snippet: demo/gone.go a -->\n```go\nx\n```\n" +
		"<!-- snippet: demo/example_test.go nosuch -->\n```go\nx\n```\n" +
		"<!-- snippet: demo/twice.go a -->\n```go\nvar x = 1\n```\n" +
		"<!-- snippet: demo/open.go a -->\n```go\nvar x = 1\n```\n" +
		"<!-- snippet: demo/ignored.go a -->\n```go\nvar x = 1\n```\n" +
		"<!-- snippet: demo/example_test.go -->\n```go\nx\n```\n"
	probs := docsnippets.Check(&docsnippets.Source{Root: root}, "docs/a.md", []byte(md))
	msgs := messages(probs)
	require.Len(t, msgs, 6, msgs)
	require.Contains(t, msgs[0], "demo/gone.go does not exist")
	require.Contains(t, msgs[1], `demo/example_test.go has no region "nosuch"`)
	require.Contains(t, msgs[2], `region "a" is defined twice`)
	require.Contains(t, msgs[3], `region "a" has no snippet-end`)
	require.Contains(t, msgs[4], "excluded from the build")
	require.Contains(t, msgs[5], "malformed snippet marker")
}

func TestUpdateRewritesFencesNotCode(t *testing.T) {
	t.Parallel()
	root := fixture(t, map[string]string{"demo/example_test.go": fixtureGo})
	md := "# Demo\n\n<!-- snippet: demo/example_test.go inner -->\n```go\nold\nlines\n```\n\n" +
		"- item\n\n  <!-- snippet: demo/example_test.go hello -->\n  ```go\n  old\n  ```\n\n```go\nunmarked\n```\n\nEnd.\n"
	src := &docsnippets.Source{Root: root}
	updated, probs := docsnippets.Update(src, "docs/a.md", []byte(md))
	msgs := messages(probs)
	require.Len(t, msgs, 1, msgs)
	require.Contains(t, msgs[0], "without a snippet marker", "update cannot invent a marker")
	want := "# Demo\n\n<!-- snippet: demo/example_test.go inner -->\n```go\nfmt.Println(\"inner\")\n```\n\n" +
		"- item\n\n  <!-- snippet: demo/example_test.go hello -->\n  ```go\n  msg := \"hello\"\n  if msg != \"\" {\n  \tfmt.Println(msg)\n  }\n  fmt.Println(\"inner\")\n  ```\n\n```go\nunmarked\n```\n\nEnd.\n"
	require.Equal(t, want, string(updated))
	code, err := os.ReadFile(filepath.Join(root, "demo", "example_test.go"))
	require.NoError(t, err)
	require.Equal(t, fixtureGo, string(code))
	// The rewritten file checks clean but for the unmarked fence.
	after := messages(docsnippets.Check(src, "docs/a.md", updated))
	require.Len(t, after, 1, after)
	// Updating an up-to-date file changes nothing.
	again, _ := docsnippets.Update(src, "docs/a.md", updated)
	require.Equal(t, string(updated), string(again))
}

func TestDiff(t *testing.T) {
	t.Parallel()
	got := docsnippets.Diff([]string{"a", "b", "c"}, []string{"a", "x", "c", "d"})
	require.Equal(t, "--- markdown fence\n+++ code region\n  a\n- b\n+ x\n  c\n+ d\n", got)
}
