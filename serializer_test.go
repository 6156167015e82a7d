package writethrough

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// SerializedDoc has fields with GORM's json and gob serializers.
type SerializedDoc struct {
	ID      uint
	Attrs   map[string]any `gorm:"serializer:json"`
	Tags    []string       `gorm:"serializer:json"`
	NilTags []string       `gorm:"serializer:json"`
	Blob    map[string]int `gorm:"serializer:gob;type:bytes"`
}

func TestSerializerFieldsAreServedFromTheCache(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, Config{}, &SerializedDoc{})
		doc := SerializedDoc{
			Attrs: map[string]any{"n": 1.5, "list": []any{"a", nil, true}},
			Tags:  []string{"x", "中"},
			Blob:  map[string]int{"k": 3},
		}
		require.NoError(t, e.db.Create(&doc).Error)
		e.queries()

		var got SerializedDoc
		require.NoError(t, e.db.First(&got, doc.ID).Error)
		require.Zero(t, e.queries(), "a row with serializer fields must be served from the cache")
		require.Zero(t, e.plugin.Stats().DecodeErrors)
		require.Equal(t, doc.Attrs, got.Attrs)
		require.Equal(t, doc.Tags, got.Tags)
		require.Nil(t, got.NilTags)
		require.Equal(t, doc.Blob, got.Blob)
	})
}
