// Package seqlist renders lists of event seqs for SQL: the one list builder
// the dialect stores share. Built from integers only, its output is safe to
// put in SQL text or pass as one parameter.
package seqlist

import "strconv"

// Join renders seqs separated by commas, between open and close (either may
// be empty): "1,2,3", "{1,2,3}" (a PostgreSQL array literal) or "[1,2,3]"
// (a JSON array).
func Join(open string, seqs []int64, closing string) string {
	b := make([]byte, 0, len(open)+len(closing)+len(seqs)*8)
	b = append(b, open...)
	for i, seq := range seqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, seq, 10)
	}
	return string(append(b, closing...))
}
