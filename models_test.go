package writethrough

import (
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// Every model the tests migrate or parse, under one naming scheme: an
// exported noun that says what the model is or has. Table names derive from
// these names (behind the harness's per-test prefix), so a test that spells
// a table spells it from the model; the key layout tests do not depend on
// any model name.

// Everyday models.

// Product is the tests' everyday model: an integer key the database
// assigns, a database default, and soft delete (gorm.DeletedAt embedded).
type Product struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Price int64
	Stock int `gorm:"default:7"`
	gorm.DeletedAt
}

// Plain is a model without soft delete.
type Plain struct {
	ID   uint
	Name string
}

// SKU has a string primary key. MySQL/MariaDB compare it without regard
// to case (and trailing spaces) under their default collations.
type SKU struct {
	Code string `gorm:"primaryKey;size:32"`
	Name string
}

// Coded has a string primary key.
type Coded struct {
	Code string `gorm:"primaryKey"`
	Name string
}

// Pair has a composite primary key.
type Pair struct {
	A int `gorm:"primaryKey;autoIncrement:false"`
	B int `gorm:"primaryKey;autoIncrement:false"`
	V string
}

// Memo has a text column that can hold a row too large to cache.
type Memo struct {
	ID   uint   `gorm:"primaryKey"`
	Body string `gorm:"type:text"`
}

// Ticket is a row whose COMMIT the tests make fail.
type Ticket struct {
	ID       uint `gorm:"primaryKey"`
	Code     string
	ParentID *uint
	Price    int64
}

// AuditLog has no primary key.
type AuditLog struct {
	Event string
	Level int
}

// NoteRow has a field the cache does not store (gorm:"-").
type NoteRow struct {
	ID   uint `gorm:"primaryKey"`
	Name string
	Note string `gorm:"-"`
}

// EmbeddedKey has its primary key in an embedded pointer struct.
type EmbeddedKey struct {
	*EmbeddedID
	Name string
}

// EmbeddedID holds EmbeddedKey's primary key.
type EmbeddedID struct {
	ID uint `gorm:"primaryKey"`
}

// Models that choose their TTL (CacheTTLer).

// ShortLived chooses its own TTL.
type ShortLived struct {
	ID   uint
	Name string
}

func (ShortLived) CacheTTL() time.Duration { return 10 * time.Minute }

// DefaultLived implements CacheTTLer but keeps Config.TTL.
type DefaultLived struct {
	ID   uint
	Name string
}

func (*DefaultLived) CacheTTL() time.Duration { return 0 }

// Uncached opts out, with a pointer receiver.
type Uncached struct {
	ID   uint
	Name string
}

func (*Uncached) CacheTTL() time.Duration { return NoCache }

// The read fixture's models (newReadFixture).

// Article is the read tests' product. Its DeletedAt is a named field:
// an embedded gorm.DeletedAt would make *Article a driver.Valuer, and
// GORM would then refuse Where(&Article{...}) as "unsupported data".
type Article struct {
	ID        uint `gorm:"primaryKey"`
	Name      string
	Price     int64
	Stock     int `gorm:"default:7"`
	DeletedAt gorm.DeletedAt
}

// Edition has a composite primary key: an integer and a string.
type Edition struct {
	BookID uint   `gorm:"primaryKey;autoIncrement:false"`
	Lang   string `gorm:"primaryKey;size:16"`
	Title  string
}

// Account has a string primary key.
type Account struct {
	Code  string `gorm:"primaryKey;size:32"`
	Owner string
}

// Gizmo counts its AfterFind calls, so a test sees hooks run on hits.
type Gizmo struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Found int `gorm:"-"`
}

// AfterFind counts the call.
func (g *Gizmo) AfterFind(*gorm.DB) error {
	g.Found++
	return nil
}

// Author has many Books; a Book belongs to an Author.
type Author struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Books []Book `gorm:"foreignKey:AuthorID"`
}

// Book belongs to an Author.
type Book struct {
	ID       uint `gorm:"primaryKey"`
	AuthorID uint
	Title    string
	Author   *Author
}

// ArticleName is another struct over the articles table.
type ArticleName struct {
	ID   uint
	Name string
}

// The write-shape tests' models.

// Item is the model of the write-shape tests: a database default, an
// updated_at, and an indexed soft delete.
type Item struct {
	ID        uint `gorm:"primaryKey"`
	Name      string
	Stock     int
	Price     int64
	Note      string `gorm:"default:fresh"`
	Flag      bool
	UpdatedAt time.Time
	DeletedAt gorm.DeletedAt `gorm:"index"`
}

// Upsertable has a unique column besides its key, for upserts that
// conflict on it.
type Upsertable struct {
	ID    uint   `gorm:"primaryKey"`
	Code  string `gorm:"uniqueIndex;size:64"`
	Name  string
	Count int
}

// Hooked changes its own fields in hooks.
type Hooked struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Audit string
	Saves int
}

func (h *Hooked) BeforeSave(tx *gorm.DB) error {
	h.Name = strings.ToUpper(h.Name)
	h.Saves++
	return nil
}

func (h *Hooked) BeforeUpdate(tx *gorm.DB) error {
	// SetColumn changes the statement's assignments, not only the struct.
	tx.Statement.SetColumn("audit", "updated:"+strings.ToLower(h.Name))
	return nil
}

// Fussy fails its AfterUpdate hook for one name, after the UPDATE ran.
type Fussy struct {
	ID   uint `gorm:"primaryKey"`
	Name string
}

var errFussy = errors.New("after-update hook refused")

func (f *Fussy) AfterUpdate(tx *gorm.DB) error {
	if f.Name == "refused" {
		return errFussy
	}
	return nil
}

func (f *Fussy) AfterCreate(tx *gorm.DB) error {
	if f.Name == "refused" {
		return errFussy
	}
	return nil
}

// Computed has columns the database fills: a default, a sequence, a trigger
// that rewrites the row on insert and update, a generated column and a
// timestamp default. GORM writes only Name and Price.
type Computed struct {
	ID        uint `gorm:"primaryKey"`
	Name      string
	Price     int64
	Code      string    `gorm:"default:(-)"`
	Seq       int64     `gorm:"->"`
	UpperName string    `gorm:"->"`
	Doubled   int64     `gorm:"->"`
	Touched   int       `gorm:"->"`
	MadeAt    time.Time `gorm:"->"`
}

// schemaItemTable is the schema-qualified table SchemaItem lives in; the test
// sets it before GORM parses the model.
var schemaItemTable string

// SchemaItem lives in a schema-qualified table (schemaItemTable).
type SchemaItem struct {
	ID   uint `gorm:"primaryKey"`
	Name string
}

func (SchemaItem) TableName() string { return schemaItemTable }

// Company is what a User belongs to.
type Company struct {
	ID   uint `gorm:"primaryKey"`
	Name string
}

// Profile is a User's has-one.
type Profile struct {
	ID     uint `gorm:"primaryKey"`
	UserID *uint
	Bio    string
}

// Order is a User's has-many.
type Order struct {
	ID     uint `gorm:"primaryKey"`
	UserID *uint
	Total  int
}

// Tag is a User's many2many, through UserTag.
type Tag struct {
	ID    uint `gorm:"primaryKey"`
	Label string
}

// UserTag is the join table of User.Tags, as a model of its own so its
// rows are cached (and checked) like any other.
type UserTag struct {
	UserID    uint `gorm:"primaryKey;autoIncrement:false"`
	TagID     uint `gorm:"primaryKey;autoIncrement:false"`
	CreatedAt time.Time
}

// User has every kind of association: belongs-to (Company), has-one
// (Profile), has-many (Orders) and many2many (Tags).
type User struct {
	ID          uint `gorm:"primaryKey"`
	Name        string
	CompanyID   *uint
	Company     *Company `gorm:"foreignKey:CompanyID"`
	Profile     *Profile `gorm:"foreignKey:UserID"`
	Orders      []Order  `gorm:"foreignKey:UserID"`
	Tags        []Tag    `gorm:"many2many:user_tags"`
	Preferences string
}

// Foreign-key actions GORM declares and its migrator creates: deleting or
// re-keying a Parent writes rows of the other tables.

// Parent's deletes cascade to its kids (and their grandkids) and chores,
// set its pets' ParentID to NULL and drop its join rows; its re-keys
// cascade to its pets and, by its Code, to its toys (deleted with it).
type Parent struct {
	ID    uint   `gorm:"primaryKey"`
	Code  string `gorm:"size:32;uniqueIndex"`
	Name  string
	Kids  []Kid  `gorm:"constraint:OnDelete:CASCADE"`
	Pets  []Pet  `gorm:"constraint:OnUpdate:CASCADE,OnDelete:SET NULL"`
	Toys  []Toy  `gorm:"foreignKey:ParentCode;references:Code;constraint:OnUpdate:CASCADE,OnDelete:CASCADE"`
	Clubs []Club `gorm:"many2many:parent_clubs;constraint:OnDelete:CASCADE"`
}

// Kid is deleted with its parent, and its grandkids with it.
type Kid struct {
	ID        uint `gorm:"primaryKey"`
	ParentID  uint
	Name      string
	Grandkids []Grandkid `gorm:"constraint:OnDelete:CASCADE"`
}

// Grandkid is deleted with its kid.
type Grandkid struct {
	ID    uint `gorm:"primaryKey"`
	KidID uint
	Name  string
}

// Pet loses its parent (NULL) when the parent is deleted, and follows it
// when the parent's key changes.
type Pet struct {
	ID       uint `gorm:"primaryKey"`
	ParentID *uint
	Name     string
}

// Toy follows its parent's Code, and is deleted with it.
type Toy struct {
	ID         uint   `gorm:"primaryKey"`
	ParentCode string `gorm:"size:32"`
	Name       string
}

// Club is on the other side of Parent's many2many.
type Club struct {
	ID   uint `gorm:"primaryKey"`
	Name string
}

// Chore declares its constraint on the child side (belongs-to): Parent
// does not know it.
type Chore struct {
	ID       uint `gorm:"primaryKey"`
	ParentID uint
	Parent   Parent `gorm:"constraint:OnDelete:CASCADE"`
	Name     string
}

// Models of the value-fidelity tests: every kind of field a model commonly has.

// Fidelity has a field of every kind a model commonly has.
type Fidelity struct {
	ID uint `gorm:"primaryKey"`

	I8  int8
	I16 int16
	I32 int32
	I64 int64
	I   int
	U8  uint8
	U16 uint16
	U32 uint32
	U64 uint64
	U   uint
	F32 float32
	F64 float64
	Yes bool
	No  bool

	Text      string
	EmptyText string
	Blob      []byte
	EmptyBlob []byte
	NilBlob   []byte

	At      time.Time  `gorm:"precision:6"`
	AtMilli time.Time  // the dialect's default precision (MySQL: datetime(3))
	AtPtr   *time.Time `gorm:"precision:6"`
	AtNil   *time.Time `gorm:"precision:6"`
	IntPtr  *int64
	StrNil  *string

	NStr   sql.NullString
	NInt   sql.NullInt64
	NTime  sql.NullTime `gorm:"precision:6"`
	NBool  sql.NullBool
	NFloat sql.NullFloat64

	Attrs map[string]any `gorm:"serializer:json"`
	Tags  []string       `gorm:"serializer:json"`
	Empty []string       `gorm:"serializer:json"`

	Addr  FidelityAddress  `gorm:"embedded;embeddedPrefix:addr_"`
	Meta  *FidelityAddress `gorm:"embedded;embeddedPrefix:meta_"`
	Price Money
	Fee   *Money

	// Custom Valuer/Scanner types of every field kind, stored as text.
	Temp    Celsius
	TempPtr *Celsius
	TempNil *Celsius
	Lvl     Level
	Weight  Grams
	Flag    YesNo
	Label   Tagged
	Digest  Hexed
	Src     Sourced

	CreatedAt   time.Time
	UpdatedAt   time.Time
	UpdatedNano int64 `gorm:"autoUpdateTime:nano"`
	Stock       int   `gorm:"default:7"`
	DeletedAt   gorm.DeletedAt
}

// FidelityAddress is embedded with a column prefix.
type FidelityAddress struct {
	Street string
	Zip    *string
}

// Money is a custom column type: stored as "<cents> <currency>" text.
type Money struct {
	Cents    int64
	Currency string
}

// Value implements driver.Valuer.
func (m Money) Value() (driver.Value, error) {
	return strconv.FormatInt(m.Cents, 10) + " " + m.Currency, nil
}

// Scan implements sql.Scanner, from text as the drivers return it.
func (m *Money) Scan(v any) error {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case []byte:
		s = string(x)
	case nil:
		*m = Money{}
		return nil
	default:
		return fmt.Errorf("Money: cannot scan a %T", v)
	}
	cents, cur, ok := strings.Cut(s, " ")
	if !ok {
		return fmt.Errorf("Money: bad value %q", s)
	}
	n, err := strconv.ParseInt(cents, 10, 64)
	if err != nil {
		return fmt.Errorf("Money: %w", err)
	}
	*m = Money{Cents: n, Currency: cur}
	return nil
}

// Custom column types whose Valuer writes text that only their Scanner
// reads back: GORM's setters for the underlying kind cannot parse it
// ("21.50C" is no float) or parse it wrong (ParseBool("Y") is false), so a
// cached value must come back through the Scanner, as a database read does.

// Celsius is a float stored as "21.50C".
type Celsius float64

// Value implements driver.Valuer.
func (c Celsius) Value() (driver.Value, error) {
	return strconv.FormatFloat(float64(c), 'f', 2, 64) + "C", nil
}

// Scan implements sql.Scanner.
func (c *Celsius) Scan(v any) error {
	s, err := scanText("Celsius", v)
	if err != nil {
		return err
	}
	num, ok := strings.CutSuffix(s, "C")
	if !ok {
		return fmt.Errorf("Celsius: bad value %q", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return fmt.Errorf("Celsius: %w", err)
	}
	*c = Celsius(f)
	return nil
}

// GormDataType stores it in a text column.
func (Celsius) GormDataType() string { return "string" }

// Level is an int stored as "L<n>".
type Level int

// Value implements driver.Valuer.
func (l Level) Value() (driver.Value, error) { return "L" + strconv.Itoa(int(l)), nil }

// Scan implements sql.Scanner.
func (l *Level) Scan(v any) error {
	s, err := scanText("Level", v)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimPrefix(s, "L"))
	if err != nil || !strings.HasPrefix(s, "L") {
		return fmt.Errorf("Level: bad value %q", s)
	}
	*l = Level(n)
	return nil
}

// GormDataType stores it in a text column.
func (Level) GormDataType() string { return "string" }

// Grams is an unsigned int stored as "<n>g".
type Grams uint32

// Value implements driver.Valuer.
func (g Grams) Value() (driver.Value, error) { return strconv.FormatUint(uint64(g), 10) + "g", nil }

// Scan implements sql.Scanner.
func (g *Grams) Scan(v any) error {
	s, err := scanText("Grams", v)
	if err != nil {
		return err
	}
	num, ok := strings.CutSuffix(s, "g")
	n, err := strconv.ParseUint(num, 10, 32)
	if !ok || err != nil {
		return fmt.Errorf("Grams: bad value %q", s)
	}
	*g = Grams(n)
	return nil
}

// GormDataType stores it in a text column.
func (Grams) GormDataType() string { return "string" }

// YesNo is a bool stored as "Y" or "N".
type YesNo bool

// Value implements driver.Valuer.
func (y YesNo) Value() (driver.Value, error) {
	if y {
		return "Y", nil
	}
	return "N", nil
}

// Scan implements sql.Scanner.
func (y *YesNo) Scan(v any) error {
	s, err := scanText("YesNo", v)
	if err != nil {
		return err
	}
	switch s {
	case "Y":
		*y = true
	case "N":
		*y = false
	default:
		return fmt.Errorf("YesNo: bad value %q", s)
	}
	return nil
}

// GormDataType stores it in a text column.
func (YesNo) GormDataType() string { return "string" }

// Tagged is a string stored with a "t:" prefix.
type Tagged string

// Value implements driver.Valuer.
func (t Tagged) Value() (driver.Value, error) { return "t:" + string(t), nil }

// Scan implements sql.Scanner.
func (t *Tagged) Scan(v any) error {
	s, err := scanText("Tagged", v)
	if err != nil {
		return err
	}
	rest, ok := strings.CutPrefix(s, "t:")
	if !ok {
		return fmt.Errorf("Tagged: bad value %q", s)
	}
	*t = Tagged(rest)
	return nil
}

// GormDataType stores it in a text column.
func (Tagged) GormDataType() string { return "string" }

// Hexed is bytes stored as hex text.
type Hexed []byte

// Value implements driver.Valuer.
func (h Hexed) Value() (driver.Value, error) { return hex.EncodeToString(h), nil }

// Scan implements sql.Scanner.
func (h *Hexed) Scan(v any) error {
	s, err := scanText("Hexed", v)
	if err != nil {
		return err
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("Hexed: %w", err)
	}
	*h = b
	return nil
}

// GormDataType stores it in a text column.
func (Hexed) GormDataType() string { return "string" }

// Sourced is text that remembers the Go type its Scanner was given, so a
// cached read that hands the Scanner something other than what the driver
// returns (a string where MySQL gives []byte) reads differently.
type Sourced struct {
	Text string
	From string
}

// Value implements driver.Valuer.
func (s Sourced) Value() (driver.Value, error) { return s.Text, nil }

// Scan implements sql.Scanner.
func (s *Sourced) Scan(v any) error {
	text, err := scanText("Sourced", v)
	if err != nil {
		return err
	}
	*s = Sourced{Text: text, From: fmt.Sprintf("%T", v)}
	return nil
}

// GormDataType stores it in a text column.
func (Sourced) GormDataType() string { return "string" }

// scanText accepts text as the drivers return it.
func scanText(typ string, v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	}
	return "", fmt.Errorf("%s: cannot scan a %T", typ, v)
}

// SerializedDoc has fields with GORM's json and gob serializers.
type SerializedDoc struct {
	ID      uint
	Attrs   map[string]any `gorm:"serializer:json"`
	Tags    []string       `gorm:"serializer:json"`
	NilTags []string       `gorm:"serializer:json"`
	Blob    map[string]int `gorm:"serializer:gob;type:bytes"`
}

// Every Go type a primary key can have (parsed, never migrated).

// KeyPartKinds has a primary-key-capable field of every kind keyPart knows.
type KeyPartKinds struct {
	I    int
	I8   int8
	I16  int16
	I32  int32
	I64  int64
	U    uint
	U8   uint8
	U16  uint16
	U32  uint32
	U64  uint64
	S    string
	B    []byte
	PI   *int64
	UUID testUUID
	MyI  myInt
	F    float64
}

// Two layouts of one table, and the naming strategy that maps both to it.

// GadgetV1 and GadgetV2 are two layouts of one table, as an old and a new
// binary have them during a rolling deploy: the new one dropped price and
// added stock. Both encode to the same shapes, so only the layout
// fingerprint tells their entries apart.
type GadgetV1 struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Price int64
}

// GadgetV2 is the new binary's layout of GadgetV1's table.
type GadgetV2 struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Stock int64 `gorm:"default:5"`
}

// gadgetNamer maps both layouts to one table.
type gadgetNamer struct{ schema.NamingStrategy }

func (n gadgetNamer) TableName(s string) string {
	if strings.HasPrefix(s, "Gadget") {
		s = "Gadget"
	}
	return n.NamingStrategy.TableName(s)
}

// The standalone suites' tables.

// HistRow is the checker's table. Payload names the operation that wrote
// the row, so every value read can be traced to exactly one write.
type HistRow struct {
	ID        int64 `gorm:"primaryKey;autoIncrement:false"`
	Version   int64
	Payload   string `gorm:"size:64"`
	UpdatedAt time.Time
}

// BenchRow is a realistic row: 15 columns, strings, times, a nullable time,
// a float, a bool and a soft-delete column.
type BenchRow struct {
	ID          uint   `gorm:"primaryKey"`
	SKU         string `gorm:"size:64"`
	Name        string `gorm:"size:200"`
	Description string `gorm:"size:2000"`
	PriceCents  int64
	Currency    string `gorm:"size:3"`
	Stock       int
	WeightKg    float64
	Active      bool
	Tags        string `gorm:"size:200"`
	OwnerID     int64
	CreatedAt   time.Time
	UpdatedAt   time.Time
	PublishedAt *time.Time
	DeletedAt   gorm.DeletedAt
}

// Models of one table under two names (identity_test.go): their TableName
// is set per test before GORM parses them.
var spelledTables [2]string

// BareSpelled names its table unqualified.
type BareSpelled struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Price int64
}

func (BareSpelled) TableName() string { return spelledTables[0] }

// QualifiedSpelled names the same table qualified by its schema.
type QualifiedSpelled struct {
	ID    uint `gorm:"primaryKey"`
	Name  string
	Price int64
}

func (QualifiedSpelled) TableName() string { return spelledTables[1] }

// tenantTable is TenantRow's table, the same name in every database of a
// test (identity_test.go).
var tenantTable string

// TenantRow is a row of one table that several databases hold.
type TenantRow struct {
	ID   uint `gorm:"primaryKey;autoIncrement:false"`
	Name string
}

func (TenantRow) TableName() string { return tenantTable }
