package writethrough

import (
	"testing"
	"time"

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

func TestJSONCodecKeepsOffsetsWithSeconds(t *testing.T) {
	// Amsterdam's local mean time in 1900 was +00:19:32; RFC 3339 can only
	// write +00:19.
	ams, err := time.LoadLocation("Europe/Amsterdam")
	require.NoError(t, err)
	for _, want := range []time.Time{
		time.Date(1900, 1, 1, 12, 0, 0, 5, ams),
		time.Date(2024, 1, 1, 12, 0, 0, 5, time.FixedZone("X", 5*3600+30*60+15)),
	} {
		b, err := JSONCodec{}.Append(nil, []any{want})
		require.NoError(t, err)
		got := make([]any, 1)
		require.NoError(t, JSONCodec{}.Decode(b, got))
		require.True(t, want.Equal(got[0].(time.Time)), "want %v, got %v", want, got[0])
		require.Equal(t, want.Location().String(), got[0].(time.Time).Location().String())
	}
}

func TestJSONCodecYears(t *testing.T) {
	// Years RFC 3339 can write come back; others (Postgres has both BC and
	// years past 9999) are refused, not stored as an entry that never
	// decodes.
	for _, want := range []time.Time{
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		b, err := JSONCodec{}.Append(nil, []any{want})
		require.NoError(t, err)
		got := make([]any, 1)
		require.NoError(t, JSONCodec{}.Decode(b, got), "%v", want)
		require.True(t, want.Equal(got[0].(time.Time)))
	}
	for _, bad := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		_, err := JSONCodec{}.Append(nil, []any{bad})
		require.Error(t, err, "%v", bad)
	}
}
