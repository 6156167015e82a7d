package writethrough

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Codec turns a row's column values into bytes and back. The values are
// those a database driver deals in: nil, int64, uint64, float64, bool,
// []byte, string and time.Time. A Codec must be safe for concurrent use.
type Codec interface {
	// Name identifies the format. It is part of every entry's fingerprint,
	// so entries written with another codec are never decoded as this one's.
	Name() string
	// Append appends the encoding of values to dst.
	Append(dst []byte, values []any) ([]byte, error)
	// Decode decodes data into values, which has the length Append was
	// given. data must not be retained or modified: copy what is kept.
	Decode(data []byte, values []any) error
}

// errCorrupt marks an entry that failed its checksum or could not be parsed.
var errCorrupt = errors.New("writethrough: corrupt cache entry")

// crcTable is CRC-32C, which has hardware support on amd64 and arm64.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// sealEntry appends a checksum to an encoded row, so that a truncated or
// altered entry is detected rather than decoded into wrong values.
func sealEntry(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// openEntry checks and strips the checksum added by sealEntry.
func openEntry(b []byte) ([]byte, error) {
	if len(b) < 4 {
		return nil, errCorrupt
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, errCorrupt
	}
	return body, nil
}

// BinaryCodec is the default codec: a compact tagged binary format. It
// encodes and decodes several times faster than JSON and keeps every value
// exactly, time zones included (see README, "Codec").
type BinaryCodec struct{}

// Name implements Codec.
func (BinaryCodec) Name() string { return "bin1" }

const (
	tagNil byte = iota
	tagInt
	tagUint
	tagFloat
	tagFalse
	tagTrue
	tagBytes
	tagString
	tagTime
)

// Zones of a time value.
const (
	zoneUTC byte = iota
	zoneLocal
	zoneNamed // a location time.LoadLocation knows by name
	zoneFixed // a fixed offset with a name
)

// Append implements Codec.
func (BinaryCodec) Append(dst []byte, values []any) ([]byte, error) {
	dst = binary.AppendUvarint(dst, uint64(len(values)))
	for _, v := range values {
		switch x := v.(type) {
		case nil:
			dst = append(dst, tagNil)
		case int64:
			dst = binary.AppendVarint(append(dst, tagInt), x)
		case uint64:
			dst = binary.AppendUvarint(append(dst, tagUint), x)
		case float64:
			dst = binary.LittleEndian.AppendUint64(append(dst, tagFloat), math.Float64bits(x))
		case bool:
			if x {
				dst = append(dst, tagTrue)
			} else {
				dst = append(dst, tagFalse)
			}
		case []byte:
			dst = binary.AppendUvarint(append(dst, tagBytes), uint64(len(x)))
			dst = append(dst, x...)
		case string:
			dst = binary.AppendUvarint(append(dst, tagString), uint64(len(x)))
			dst = append(dst, x...)
		case time.Time:
			dst = append(dst, tagTime)
			dst = binary.AppendVarint(dst, x.Unix())
			dst = binary.AppendUvarint(dst, uint64(x.Nanosecond()))
			dst = appendZone(dst, x)
		default:
			return nil, fmt.Errorf("writethrough: BinaryCodec cannot encode %T", v)
		}
	}
	return dst, nil
}

func appendZone(dst []byte, t time.Time) []byte {
	loc := t.Location()
	switch loc {
	case time.UTC:
		return append(dst, zoneUTC)
	case time.Local:
		return append(dst, zoneLocal)
	}
	name, offset := t.Zone()
	if named := loc.String(); isNamedZone(t, named) {
		dst = binary.AppendUvarint(append(dst, zoneNamed), uint64(len(named)))
		return append(dst, named...)
	}
	dst = binary.AppendUvarint(append(dst, zoneFixed), uint64(len(name)))
	dst = append(dst, name...)
	return binary.AppendVarint(dst, int64(offset))
}

// Decode implements Codec.
func (BinaryCodec) Decode(data []byte, values []any) error {
	d := decoder{b: data}
	if n := d.uvarint(); n != uint64(len(values)) || d.err != nil {
		return errCorrupt
	}
	for i := range values {
		switch d.byte() {
		case tagNil:
			values[i] = nil
		case tagInt:
			values[i] = d.varint()
		case tagUint:
			values[i] = d.uvarint()
		case tagFloat:
			values[i] = math.Float64frombits(d.uint64())
		case tagFalse:
			values[i] = false
		case tagTrue:
			values[i] = true
		case tagBytes:
			values[i] = append([]byte{}, d.bytes()...)
		case tagString:
			values[i] = string(d.bytes())
		case tagTime:
			sec, nsec := d.varint(), d.uvarint()
			loc := d.zone()
			if nsec >= 1e9 {
				d.err = errCorrupt
			}
			values[i] = time.Unix(sec, int64(nsec)).In(loc)
		default:
			d.err = errCorrupt
		}
		if d.err != nil {
			return d.err
		}
	}
	if len(d.b) != 0 {
		return errCorrupt
	}
	return nil
}

// decoder reads the binary format; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errCorrupt, nil }

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0xff
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) zone() *time.Location {
	switch d.byte() {
	case zoneUTC:
		return time.UTC
	case zoneLocal:
		return time.Local
	case zoneNamed:
		loc, err := loadZone(string(d.bytes()))
		if err != nil {
			d.fail()
			return time.UTC
		}
		return loc
	case zoneFixed:
		name := d.bytes()
		offset := d.varint()
		if d.err != nil {
			return time.UTC
		}
		return fixedZone(string(name), int(offset))
	}
	d.fail()
	return time.UTC
}

// Locations are cached so that decoding a time neither reads the zone
// database nor allocates a new *time.Location per value.
var (
	namedZones sync.Map // name -> *time.Location, or error
	fixedZones sync.Map // fixedZoneKey -> *time.Location
)

type fixedZoneKey struct {
	name   string
	offset int
}

func loadZone(name string) (*time.Location, error) {
	if v, ok := namedZones.Load(name); ok {
		if loc, ok := v.(*time.Location); ok {
			return loc, nil
		}
		return nil, v.(error)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		namedZones.Store(name, err)
		return nil, err
	}
	namedZones.Store(name, loc)
	return loc, nil
}

// isNamedZone reports whether t's location can be stored by name: the zone
// database knows the name and gives t the same zone there. A FixedZone that
// happens to share a name with a real zone ("CET") is stored as fixed.
func isNamedZone(t time.Time, name string) bool {
	if name == "" || name == "UTC" || name == "Local" {
		return false
	}
	loc, err := loadZone(name)
	if err != nil {
		return false
	}
	n1, o1 := t.Zone()
	n2, o2 := t.In(loc).Zone()
	return n1 == n2 && o1 == o2
}

func fixedZone(name string, offset int) *time.Location {
	k := fixedZoneKey{name, offset}
	if v, ok := fixedZones.Load(k); ok {
		return v.(*time.Location)
	}
	v, _ := fixedZones.LoadOrStore(k, time.FixedZone(name, offset))
	return v.(*time.Location)
}

// JSONCodec stores rows as JSON arrays of tagged values, readable in
// redis-cli (after the entry's short header). It is slower and larger than
// BinaryCodec; pick it when reading entries by eye matters more.
type JSONCodec struct{}

// Name implements Codec.
func (JSONCodec) Name() string { return "json1" }

// jsonValue is one tagged value: exactly one field is set, or none for NULL.
type jsonValue struct {
	I *string  `json:"i,omitempty"` // int64, as text to keep all 64 bits
	U *string  `json:"u,omitempty"` // uint64, as text
	F *float64 `json:"f,omitempty"`
	B *bool    `json:"b,omitempty"`
	Y *string  `json:"y,omitempty"` // []byte, base64
	S *string  `json:"s,omitempty"`
	T *string  `json:"t,omitempty"` // time, RFC 3339 with nanoseconds
	Z *string  `json:"z,omitempty"` // the time's zone: "UTC", "Local", a zone name, or "name offset"
}

// Append implements Codec.
func (JSONCodec) Append(dst []byte, values []any) ([]byte, error) {
	out := make([]jsonValue, len(values))
	for i, v := range values {
		switch x := v.(type) {
		case nil:
		case int64:
			s := strconv.FormatInt(x, 10)
			out[i].I = &s
		case uint64:
			s := strconv.FormatUint(x, 10)
			out[i].U = &s
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("writethrough: JSONCodec cannot encode %v", x)
			}
			out[i].F = &x
		case bool:
			out[i].B = &x
		case []byte:
			s := base64.StdEncoding.EncodeToString(x)
			out[i].Y = &s
		case string:
			// encoding/json replaces invalid UTF-8 with U+FFFD: the row
			// would come back different, so it is not cached at all.
			if !utf8.ValidString(x) {
				return nil, fmt.Errorf("writethrough: JSONCodec cannot encode a string that is not valid UTF-8")
			}
			out[i].S = &x
		case time.Time:
			z := jsonZone(x)
			if _, offset := x.Zone(); offset%60 != 0 {
				// RFC 3339 offsets have no seconds (local mean time
				// before 1900 has them): the text would name another
				// instant. The zone is kept in z anyway.
				x = x.UTC()
			}
			if y := x.Year(); y < 0 || y > 9999 {
				// RFC 3339 has four-digit years: the text would not parse
				// back, and every read of the row would fail to decode.
				return nil, fmt.Errorf("writethrough: JSONCodec cannot encode the year %d", y)
			}
			s := x.Format(time.RFC3339Nano)
			out[i].T, out[i].Z = &s, &z
		default:
			return nil, fmt.Errorf("writethrough: JSONCodec cannot encode %T", v)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("writethrough: JSONCodec: %w", err)
	}
	return append(dst, b...), nil
}

func jsonZone(t time.Time) string {
	switch loc := t.Location(); {
	case loc == time.UTC:
		return "UTC"
	case loc == time.Local:
		return "Local"
	case isNamedZone(t, loc.String()):
		return loc.String()
	}
	name, offset := t.Zone()
	return name + " " + strconv.Itoa(offset)
}

// Decode implements Codec.
func (JSONCodec) Decode(data []byte, values []any) error {
	var in []jsonValue
	if err := json.Unmarshal(data, &in); err != nil || len(in) != len(values) {
		return errCorrupt
	}
	for i, v := range in {
		var err error
		switch {
		case v.I != nil:
			values[i], err = strconv.ParseInt(*v.I, 10, 64)
		case v.U != nil:
			values[i], err = strconv.ParseUint(*v.U, 10, 64)
		case v.F != nil:
			values[i] = *v.F
		case v.B != nil:
			values[i] = *v.B
		case v.Y != nil:
			values[i], err = base64.StdEncoding.DecodeString(*v.Y)
		case v.S != nil:
			values[i] = *v.S
		case v.T != nil && v.Z != nil:
			values[i], err = parseJSONTime(*v.T, *v.Z)
		default:
			values[i] = nil
		}
		if err != nil {
			return errCorrupt
		}
	}
	return nil
}

func parseJSONTime(text, zone string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, text)
	if err != nil {
		return time.Time{}, err
	}
	switch zone {
	case "UTC":
		return t.UTC(), nil
	case "Local":
		return t.Local(), nil
	}
	if loc, err := loadZone(zone); err == nil {
		return t.In(loc), nil
	}
	for i := len(zone) - 1; i >= 0; i-- {
		if zone[i] == ' ' {
			offset, err := strconv.Atoi(zone[i+1:])
			if err != nil {
				return time.Time{}, err
			}
			return t.In(fixedZone(zone[:i], offset)), nil
		}
	}
	return time.Time{}, errCorrupt
}
