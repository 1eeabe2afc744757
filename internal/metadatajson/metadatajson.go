// Package metadatajson encodes an event's metadata as the JSON object the
// dialect stores keep in their metadata column, and decodes it back. It is
// not API.
package metadatajson

import "encoding/json"

// Encode returns m as a JSON object; a nil or empty m is "{}".
func Encode(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// Decode returns the JSON object s as a map; an empty object (or an empty
// s) is a nil map.
func Decode(s string) (map[string]string, error) {
	if s == "" || s == "{}" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}
