package docsnippets

import "strings"

// Diff returns a line diff from the markdown fence (want, "-" lines) to the
// code region (got, "+" lines), unchanged lines prefixed with a space.
func Diff(fence, code []string) string {
	// Longest common subsequence, by dynamic programming: snippets are short.
	n, m := len(fence), len(code)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if fence[i] == code[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	b.WriteString("--- markdown fence\n+++ code region\n")
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && fence[i] == code[j]:
			b.WriteString("  " + fence[i] + "\n")
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			b.WriteString("- " + fence[i] + "\n")
			i++
		default:
			b.WriteString("+ " + code[j] + "\n")
			j++
		}
	}
	return b.String()
}
