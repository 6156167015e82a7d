package sqltext

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSavepoints(t *testing.T) {
	pg, my, lite := Rules{Dollar: true}, Rules{Backslash: true, OrOperators: true}, Rules{}
	bare := func(n string) Ident { return Ident{Name: n} }
	quoted := func(n string) Ident { return Ident{Name: n, Quoted: true} }
	cases := []struct {
		rules Rules
		sql   string
		want  []Savepoint
	}{
		{lite, "SAVEPOINT sp1", []Savepoint{{SavepointCreate, bare("sp1")}}},
		{my, "  savepoint `sp1`; ", []Savepoint{{SavepointCreate, quoted("sp1")}}},
		{pg, `SAVEPOINT "sp 1"`, []Savepoint{{SavepointCreate, quoted("sp 1")}}},
		{lite, "SAVEPOINT [sp1]", []Savepoint{{SavepointCreate, quoted("sp1")}}},
		{pg, "ROLLBACK TO SAVEPOINT sp1", []Savepoint{{SavepointRollback, bare("sp1")}}},
		{pg, "ROLLBACK TO sp1", []Savepoint{{SavepointRollback, bare("sp1")}}},
		{pg, "rollback  to\n\tsavepoint SP1", []Savepoint{{SavepointRollback, bare("SP1")}}},
		{my, "ROLLBACK WORK TO SAVEPOINT sp1", []Savepoint{{SavepointRollback, bare("sp1")}}},
		{pg, "ROLLBACK TRANSACTION TO sp1;", []Savepoint{{SavepointRollback, bare("sp1")}}},
		{pg, "/* c */ ROLLBACK -- x\n TO /* y */ SAVEPOINT \"sp1\" -- z", []Savepoint{{SavepointRollback, quoted("sp1")}}},
		{my, "# c\nROLLBACK TO `sp1`", []Savepoint{{SavepointRollback, quoted("sp1")}}},
		{pg, "RELEASE SAVEPOINT sp1", []Savepoint{{SavepointRelease, bare("sp1")}}},
		{lite, "release sp1", []Savepoint{{SavepointRelease, bare("sp1")}}},
		{pg, "SAVEPOINT a; UPDATE t SET x = 1; RELEASE a", []Savepoint{{SavepointCreate, bare("a")}, {SavepointRelease, bare("a")}}},
		// Read as statements, not understood: the caller must assume the worst.
		{pg, "ROLLBACK", []Savepoint{{Kind: SavepointUnknown}}},
		{pg, "ROLLBACK WORK", []Savepoint{{Kind: SavepointUnknown}}},
		{pg, "COMMIT", []Savepoint{{Kind: SavepointUnknown}}},
		{pg, "abort", []Savepoint{{Kind: SavepointUnknown}}},
		{pg, "SAVEPOINT", []Savepoint{{Kind: SavepointUnknown}}},
		{pg, "SAVEPOINT ?", []Savepoint{{Kind: SavepointUnknown}}},
		{pg, `ROLLBACK TO SAVEPOINT U&"sp1"`, []Savepoint{{Kind: SavepointUnknown}}},
		{lite, "ROLLBACK TO SAVEPOINT 'sp1'", []Savepoint{{Kind: SavepointUnknown}}},
		{pg, "RELEASE SAVEPOINT a b", []Savepoint{{Kind: SavepointUnknown}}},
		{pg, "ROLLBACK PREPARED 'x'", []Savepoint{{Kind: SavepointUnknown}}},
		// Not savepoint statements.
		{pg, "", nil},
		{pg, "SELECT 'SAVEPOINT x'", nil},
		{pg, "UPDATE a SET x = 1", nil},
		{pg, "UPDATE savepoints SET released = 1", nil},
		{pg, "SELECT 1 -- ROLLBACK TO sp1", nil},
	}
	for _, c := range cases {
		require.Equal(t, c.want, Savepoints(c.sql, c.rules), c.sql)
	}
}

func TestMayHoldSavepointAllocatesNothing(t *testing.T) {
	sql := "SELECT * FROM items WHERE id = $1"
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = Savepoints(sql, Rules{}) }))
}
