package writethrough

import (
	"bytes"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The codecs carry the driver-level values of a row (see Codec). These tests
// check that every kind of value comes back exactly, and that a damaged or
// foreign entry is refused rather than decoded into wrong values.

var codecs = []Codec{BinaryCodec{}, JSONCodec{}}

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err, "the zone database must know %s", name)
	return loc
}

// codecValues is one value of every kind and edge both codecs must keep.
func codecValues(t testing.TB) []any {
	ny := mustZone(t, "America/New_York")
	kolkata := mustZone(t, "Asia/Kolkata")
	ams := mustZone(t, "Europe/Amsterdam")
	instant := time.Date(2024, 3, 10, 6, 59, 59, 123456789, time.UTC) // a minute before a DST change in New York
	return []any{
		nil,
		int64(0), int64(1), int64(-1), int64(math.MinInt64), int64(math.MaxInt64),
		int64(math.MinInt32), int64(math.MaxInt32),
		uint64(0), uint64(math.MaxUint64), uint64(math.MaxInt64) + 1,
		float64(0), math.Copysign(0, -1), 1.5, -1e-300, math.SmallestNonzeroFloat64,
		math.MaxFloat64, -math.MaxFloat64, float64(float32(0.1)), 0.1,
		true, false,
		"", "plain", "emoji 🦊🏳️‍🌈", "中文字符", "e\u0301 combining", "nul\x00byte", "quote \" backslash \\ <html>",
		[]byte{}, []byte{0}, []byte{0, 0, 0}, []byte("bytes\x00with\x00zeros"), bytes.Repeat([]byte{0xAB}, 300),
		instant,
		instant.In(time.Local),
		instant.In(ny),
		instant.Add(time.Minute).In(ny), // after the change: another abbreviation
		instant.In(kolkata),
		time.Date(1900, 1, 1, 12, 0, 0, 5, ams), // local mean time: +00:19:32
		instant.In(time.FixedZone("", 0)),
		instant.In(time.FixedZone("", -7*3600)),
		instant.In(time.FixedZone("X", 5*3600+30*60+15)),
		instant.In(time.FixedZone("UTC", 0)),                 // a fixed zone named like the real one
		instant.In(time.FixedZone("CET", 7200)),              // a real zone's name, another offset
		instant.In(time.FixedZone("America/New_York", 3600)), // a loadable name, wrong offset
		instant.In(time.FixedZone("My Zone", -3600)),         // a space in the name
		instant.In(time.FixedZone("Local", 60)),              // the special names, as fixed zones
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),             // the zero time
		time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC),          // before 1970: negative seconds
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	}
}

// binaryOnlyValues are kept by BinaryCodec and refused by JSONCodec, which
// could not write them back as they were.
var binaryOnlyValues = []any{
	"\xff\xfe not utf-8", math.NaN(), math.Float64frombits(0x7ff8000000000abc), math.Inf(1), math.Inf(-1),
	time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-44, 3, 15, 0, 0, 0, 0, time.UTC),
}

// requireSameValue compares two decoded values: same type, same value,
// floats by bits (NaN, -0), []byte nil apart from empty, times by
// sameTime.
func requireSameValue(t testing.TB, want, got any, msgAndArgs ...any) {
	t.Helper()
	switch w := want.(type) {
	case float64:
		g, ok := got.(float64)
		require.True(t, ok, "want float64, got %T %v %v", got, got, msgAndArgs)
		require.Equal(t, math.Float64bits(w), math.Float64bits(g), "float %v vs %v %v", w, g, msgAndArgs)
	case time.Time:
		g, ok := got.(time.Time)
		require.True(t, ok, "want time.Time, got %T %v", got, msgAndArgs)
		require.NoError(t, sameTime(w, g), msgAndArgs...)
	case []byte:
		g, ok := got.([]byte)
		require.True(t, ok, "want []byte, got %T %v", got, msgAndArgs)
		require.Equal(t, w == nil, g == nil, "nil vs empty []byte %v", msgAndArgs)
		require.Equal(t, w, g, msgAndArgs...)
	default:
		require.Equal(t, want, got, msgAndArgs...)
	}
}

// sameTime reports how two times differ in what a caller can observe: the
// instant, the zone's name and offset, and the location's name and rules.
// (reflect.DeepEqual compares *time.Location pointers and monotonic
// readings instead.)
func sameTime(want, got time.Time) error {
	if !want.Equal(got) {
		return fmt.Errorf("instant differs: want %s, got %s", want.Format(time.RFC3339Nano), got.Format(time.RFC3339Nano))
	}
	wn, wo := want.Zone()
	gn, gom := got.Zone()
	if wn != gn || wo != gom {
		return fmt.Errorf("zone differs: want %q %+d, got %q %+d", wn, wo, gn, gom)
	}
	if want.Location().String() != got.Location().String() {
		return fmt.Errorf("location differs: want %q, got %q", want.Location(), got.Location())
	}
	// The zone half a year on tells a named zone from a fixed one that
	// shares its current abbreviation and offset.
	ln, lo := want.AddDate(0, 6, 0).Zone()
	gln, glo := got.AddDate(0, 6, 0).Zone()
	if ln != gln || lo != glo {
		return fmt.Errorf("zone rules differ: half a year on want %q %+d, got %q %+d", ln, lo, gln, glo)
	}
	return nil
}

func TestCodecRoundTripEachValue(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			for i, v := range codecValues(t) {
				b, err := c.Append(nil, []any{v})
				require.NoError(t, err, "value %d %T %v", i, v, v)
				got := make([]any, 1)
				require.NoError(t, c.Decode(b, got), "value %d %T %v", i, v, v)
				requireSameValue(t, v, got[0], "value %d %T %#v", i, v, v)
			}
		})
	}
}

func TestCodecRoundTripWholeRow(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			row := codecValues(t)
			prefix := []byte("keep me")
			b, err := c.Append(append([]byte(nil), prefix...), row)
			require.NoError(t, err)
			require.True(t, bytes.HasPrefix(b, prefix), "Append must append, not overwrite")
			sealed := sealEntry(b[len(prefix):])
			body, err := openEntry(sealed)
			require.NoError(t, err)
			got := make([]any, len(row))
			require.NoError(t, c.Decode(body, got))
			for i := range row {
				requireSameValue(t, row[i], got[i], "column %d", i)
			}
			// The decoded values must not alias the entry (Codec contract):
			// scribbling over it leaves them as they were.
			for i := range body {
				body[i] = 0xEE
			}
			for i := range row {
				requireSameValue(t, row[i], got[i], "column %d after the entry was overwritten", i)
			}
		})
	}
}

func TestCodecEmptyRow(t *testing.T) {
	for _, c := range codecs {
		b, err := c.Append(nil, nil)
		require.NoError(t, err, c.Name())
		require.NoError(t, c.Decode(b, []any{}), c.Name())
		require.Error(t, c.Decode(b, make([]any, 1)), "%s: a row of 0 columns decoded as 1", c.Name())
	}
}

func TestCodecColumnCountMismatchIsRejected(t *testing.T) {
	for _, c := range codecs {
		b, err := c.Append(nil, []any{int64(1), "two", nil})
		require.NoError(t, err)
		for _, n := range []int{0, 1, 2, 4, 100} {
			require.ErrorIs(t, c.Decode(b, make([]any, n)), errCorrupt, "%s: 3 columns decoded as %d", c.Name(), n)
		}
	}
}

func TestBinaryCodecKeepsWhatJSONRefuses(t *testing.T) {
	for _, v := range binaryOnlyValues {
		b, err := BinaryCodec{}.Append(nil, []any{v})
		require.NoError(t, err)
		got := make([]any, 1)
		require.NoError(t, BinaryCodec{}.Decode(b, got))
		requireSameValue(t, v, got[0])
	}
}

func TestJSONCodecRefusesWhatItCannotKeep(t *testing.T) {
	// JSON has no spelling for NaN and infinities, encoding/json would
	// replace invalid UTF-8, and RFC 3339 has four-digit years: the row must
	// not be cached rather than come back as something else (or as an
	// entry that never decodes).
	for _, v := range binaryOnlyValues {
		_, err := JSONCodec{}.Append(nil, []any{v})
		require.Error(t, err, "%v", v)
	}
}

func TestCodecRefusesUnknownTypes(t *testing.T) {
	for _, c := range codecs {
		for _, v := range []any{int(1), float32(1), map[string]any{}, struct{}{}, &[]byte{}} {
			_, err := c.Append(nil, []any{v})
			require.Error(t, err, "%s encoded a %T", c.Name(), v)
		}
	}
}

func TestCodecNamesDiffer(t *testing.T) {
	// The name is part of the fingerprint: two codecs must never share one.
	require.NotEqual(t, BinaryCodec{}.Name(), JSONCodec{}.Name())
}

// sealedSample is a realistic entry to damage.
func sealedSample(t testing.TB, c Codec) []byte {
	b, err := c.Append(nil, codecValues(t))
	require.NoError(t, err)
	return sealEntry(b)
}

// openAndDecode does what the read path does with an entry.
func openAndDecode(c Codec, sealed []byte, n int) error {
	body, err := openEntry(sealed)
	if err != nil {
		return err
	}
	return c.Decode(body, make([]any, n))
}

func TestSealedEntryDetectsEveryByteFlip(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			n := len(codecValues(t))
			good := sealedSample(t, c)
			require.NoError(t, openAndDecode(c, good, n))
			for i := range good {
				for _, mask := range []byte{0x01, 0x80, 0xFF, 0x5A} {
					bad := append([]byte(nil), good...)
					bad[i] ^= mask
					require.Error(t, openAndDecode(c, bad, n), "flip 0x%02x at byte %d of %d accepted", mask, i, len(good))
				}
			}
		})
	}
}

func TestSealedEntryDetectsEveryTruncation(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			n := len(codecValues(t))
			good := sealedSample(t, c)
			for l := 0; l < len(good); l++ {
				require.Error(t, openAndDecode(c, good[:l:l], n), "truncation to %d of %d bytes accepted", l, len(good))
				require.Error(t, openAndDecode(c, good[len(good)-l:], n), "suffix of %d bytes accepted", l)
			}
			// Bytes after the checksum are damage too.
			require.Error(t, openAndDecode(c, append(append([]byte(nil), good...), 0), n))
		})
	}
}

func TestDecodeRejectsDamagedBodies(t *testing.T) {
	// Without the checksum in the way: every truncation of a body is
	// refused, and no byte flip panics.
	for _, c := range codecs {
		t.Run(c.Name(), func(t *testing.T) {
			row := codecValues(t)
			body, err := c.Append(nil, row)
			require.NoError(t, err)
			for l := 0; l < len(body); l++ {
				require.Error(t, c.Decode(body[:l:l], make([]any, len(row))), "truncation to %d of %d bytes decoded", l, len(body))
			}
			for i := range body {
				bad := append([]byte(nil), body...)
				bad[i] ^= 0xFF
				require.NotPanics(t, func() { _ = c.Decode(bad, make([]any, len(row))) })
			}
		})
	}
}

func TestBinaryDecodeRejectsHandMadeGarbage(t *testing.T) {
	c := BinaryCodec{}
	cases := map[string][]byte{
		"empty":                 {},
		"count only":            {1},
		"unknown tag":           {1, 0x7f},
		"huge count":            {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"overlong varint":       {1, tagInt, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"bytes longer than all": {1, tagBytes, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'},
		"short float":           {1, tagFloat, 1, 2, 3},
		"nanoseconds >= 1e9":    append([]byte{1, tagTime, 0}, append(uvarintBytes(1e9), zoneUTC)...),
		"unknown zone kind":     {1, tagTime, 0, 0, 9},
		"unknown zone name":     {1, tagTime, 0, 0, zoneNamed, 3, 'N', 'o', '/'},
		"zone path escape":      append([]byte{1, tagTime, 0, 0, zoneNamed, 16}, "../../etc/passwd"...),
		"absolute zone path":    append([]byte{1, tagTime, 0, 0, zoneNamed, 11}, "/etc/passwd"...),
		"fixed zone no offset":  {1, tagTime, 0, 0, zoneFixed, 1, 'X'},
		"trailing bytes":        {1, tagNil, tagNil},
	}
	for name, b := range cases {
		require.NotPanics(t, func() {
			require.ErrorIs(t, c.Decode(b, make([]any, 1)), errCorrupt, name)
		}, name)
	}
}

func uvarintBytes(v uint64) []byte {
	var b []byte
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func TestJSONDecodeRejectsHandMadeGarbage(t *testing.T) {
	c := JSONCodec{}
	for _, s := range []string{
		``, `[`, `{}`, `null`, `[1]`, `["x"]`, `[{"i":"x"}]`, `[{"i":"99999999999999999999"}]`,
		`[{"u":"-1"}]`, `[{"y":"!!"}]`, `[{"t":"yesterday","z":"UTC"}]`, `[{"t":"2024-01-01T00:00:00Z","z":"Nowhere"}]`,
		`[{"t":"2024-01-01T00:00:00Z","z":"X y"}]`, `[{},{}]`,
	} {
		require.NotPanics(t, func() {
			require.Error(t, c.Decode([]byte(s), make([]any, 1)), "%q decoded", s)
		}, s)
	}
}

// FuzzDecode feeds arbitrary bytes to both codecs and to openEntry: nothing
// may panic, every decoded value is of a driver type, and what BinaryCodec
// accepts encodes and decodes again to the same values.
func FuzzDecode(f *testing.F) {
	for _, c := range codecs {
		for _, v := range codecValues(f) {
			b, err := c.Append(nil, []any{v})
			require.NoError(f, err)
			f.Add(b)
			f.Add(sealEntry(b))
		}
		b, err := c.Append(nil, codecValues(f))
		require.NoError(f, err)
		f.Add(b)
		f.Add(sealEntry(b))
	}
	f.Add([]byte{})
	f.Add([]byte{1, tagTime, 0, 0, zoneNamed, 3, 'U', 'T', 'C'})
	f.Fuzz(func(t *testing.T, data []byte) {
		for n := 0; n <= 3; n++ {
			for _, c := range codecs {
				vals := make([]any, n)
				if c.Decode(data, vals) != nil {
					continue
				}
				for i, v := range vals {
					switch v.(type) {
					case nil, int64, uint64, float64, bool, []byte, string, time.Time:
					default:
						t.Fatalf("%s decoded column %d as %T", c.Name(), i, v)
					}
				}
				if _, ok := c.(BinaryCodec); !ok {
					continue
				}
				again, err := c.Append(nil, vals)
				if err != nil {
					t.Fatalf("decoded values do not encode again: %v", err)
				}
				back := make([]any, n)
				if err := c.Decode(again, back); err != nil {
					t.Fatalf("re-encoded values do not decode: %v", err)
				}
				for i := range vals {
					requireSameValue(t, vals[i], back[i], "column %d", i)
				}
			}
		}
		if body, err := openEntry(data); err == nil && len(body) != len(data)-4 {
			t.Fatalf("openEntry returned %d bytes of %d", len(body), len(data))
		}
	})
}

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
