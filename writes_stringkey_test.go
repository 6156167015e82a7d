package writethrough

import (
	"testing"

	"github.com/stretchr/testify/require"
	"gorm.io/gorm"
)

// checkCodes reads each code through the plugin and from the database.
func checkCodes(t *testing.T, w *writeEnv, codes ...string) {
	t.Helper()
	for _, c := range codes {
		var want, got SKU
		wantErr := w.plain.Where("code = ?", c).Take(&want).Error
		gotErr := w.db.Where("code = ?", c).Take(&got).Error
		require.Equal(t, wantErr == nil, gotErr == nil, "code %q: database %v, plugin %v (%+v)", c, wantErr, gotErr, got)
		require.Equal(t, want, got, "code %q", c)
	}
}

// A write that names a row in another case than it is stored in (MySQL
// finds it all the same) changes the stored row: its key, and the key the
// write named, must both end up true.
func TestWriteStringKeyInAnotherCase(t *testing.T) {
	forEachWriteMode(t, []any{&SKU{}}, func(t *testing.T, w *writeEnv) {
		w.write(t, func(db *gorm.DB) error { return db.Create(&SKU{Code: "ABC", Name: "v1"}).Error })
		codes := []string{"ABC", "abc"}
		checkCodes(t, w, codes...)
		checkCodes(t, w, codes...) // now cached where the read path caches

		w.write(t, func(db *gorm.DB) error { return db.Model(&SKU{Code: "abc"}).Update("name", "v2").Error })
		checkCodes(t, w, codes...)
		w.write(t, func(db *gorm.DB) error { return db.Where("code = ?", "abc").Updates(&SKU{Name: "v3"}).Error })
		checkCodes(t, w, codes...)
		w.write(t, func(db *gorm.DB) error { return db.Delete(&SKU{Code: "abc"}).Error })
		checkCodes(t, w, codes...)
		w.write(t, func(db *gorm.DB) error { return db.Create(&SKU{Code: "abc", Name: "lower"}).Error })
		checkCodes(t, w, codes...)
		codes = append(codes, "abc ")
		checkCodes(t, w, codes...)
		w.write(t, func(db *gorm.DB) error { return db.Model(&SKU{Code: "abc "}).Update("name", "padded").Error })
		checkCodes(t, w, codes...)
		w.write(t, func(db *gorm.DB) error { return db.Delete(&SKU{}, "code IN ?", []string{"ABC "}).Error })
		checkCodes(t, w, codes...)
	})
}
