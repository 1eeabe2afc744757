package seqlist

import "testing"

func TestJoin(t *testing.T) {
	for _, c := range []struct {
		open, closing, want string
		seqs                []int64
	}{
		{"", "", "", nil},
		{"{", "}", "{}", nil},
		{"", "", "1,2,-3", []int64{1, 2, -3}},
		{"{", "}", "{9223372036854775807}", []int64{9223372036854775807}},
		{"[", "]", "[4,5]", []int64{4, 5}},
	} {
		if got := Join(c.open, c.seqs, c.closing); got != c.want {
			t.Errorf("Join(%q, %v, %q) = %q, want %q", c.open, c.seqs, c.closing, got, c.want)
		}
	}
}
