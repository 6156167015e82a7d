package writethrough

import (
	"testing"

	"github.com/gormcache/writethrough/internal/sqltext"
	"github.com/stretchr/testify/require"
)

func TestTableNameCandidates(t *testing.T) {
	p := New(nil, Config{})
	n, _, ok := sqltext.ParseTableName(`MySchema."Items"`)
	require.True(t, ok)
	require.ElementsMatch(t, []string{"MySchema.Items", "myschema.Items", "Items"}, p.tableNameCandidates([]sqltext.TableName{n}))
	n, _, _ = sqltext.ParseTableName(`Items`)
	require.ElementsMatch(t, []string{"Items", "items"}, p.tableNameCandidates([]sqltext.TableName{n}))
}
