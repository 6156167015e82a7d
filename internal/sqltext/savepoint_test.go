package sqltext

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSavepoint(t *testing.T) {
	cases := []struct {
		sql  string
		kind SavepointKind
		name string
	}{
		{"SAVEPOINT sp1", SavepointCreate, "sp1"},
		{"  savepoint `sp1`; ", SavepointCreate, "sp1"},
		{`SAVEPOINT "sp 1"`, SavepointCreate, "sp 1"},
		{"ROLLBACK TO SAVEPOINT sp1", SavepointRollback, "sp1"},
		{"rollback to savepoint \"sp1\";", SavepointRollback, "sp1"},
	}
	for _, c := range cases {
		kind, name, ok := ParseSavepoint(c.sql)
		require.True(t, ok, c.sql)
		require.Equal(t, c.kind, kind, c.sql)
		require.Equal(t, c.name, name, c.sql)
	}
	for _, sql := range []string{"", "SAVEPOINT", "RELEASE SAVEPOINT sp1", "ROLLBACK", "SELECT 'SAVEPOINT x'", "UPDATE a SET x = 1"} {
		_, _, ok := ParseSavepoint(sql)
		require.False(t, ok, sql)
	}
}
