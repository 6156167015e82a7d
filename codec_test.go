package writethrough

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestJSONCodecRefusesInvalidUTF8(t *testing.T) {
	// encoding/json would turn the bytes into U+FFFD and the cache would
	// serve another string than the database holds.
	_, err := JSONCodec{}.Append(nil, []any{"\xff\xfe not utf-8"})
	require.Error(t, err)
	_, err = JSONCodec{}.Append(nil, []any{"emoji 🦊 中文 e\u0301"})
	require.NoError(t, err)
}
