package writethrough

import (
	"strings"
	"sync"
	"sync/atomic"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// Foreign-key actions. A model may declare, and GORM's migrator then
// creates, constraints whose actions write other tables:
//
//	Kids []Kid `gorm:"constraint:OnDelete:CASCADE"`  // deleting the parent deletes its kids
//	Pets []Pet `gorm:"constraint:OnDelete:SET NULL"` // ... sets the pets' ParentID to NULL
//	Toys []Toy `gorm:"constraint:OnUpdate:CASCADE"`  // re-keying the parent re-keys the toys
//
// The database runs those writes itself; no callback sees them. So a write
// that can set off such an action works, besides its own rows, on every
// table the actions reach (transitively: a cascaded delete sets off the
// child's own actions), as a table-level write of those tables: fenced with
// the statement's own fences, in the same round trip, and finished with
// them. The constraints are read from the schemas GORM parsed: the
// relationships of every model the plugin has seen and of every model those
// relationships lead to (has-one and has-many children, many2many join
// tables, belongs-to declared on either side).

// fkEdge is one constraint: child's foreign key references parent.
type fkEdge struct {
	child string
	// onDelete, onUpdate: the action writes the child rows (CASCADE, SET
	// NULL, SET DEFAULT); deleteCascades: it deletes them.
	onDelete, onUpdate, deleteCascades bool
	// refsKeyOnly: every referenced column is a primary key of the parent,
	// so only a write that moves the parent's key sets off onUpdate.
	refsKeyOnly bool
}

// fkIndex holds every constraint learnt, by referenced table. The map is
// replaced, never changed, so writes read it without a lock.
type fkIndex struct {
	mu       sync.Mutex
	seen     map[*schema.Schema]bool
	byParent atomic.Pointer[map[string][]fkEdge]
}

// learn indexes the constraints of s and of every schema its relationships
// lead to, under the table names resolve gives (the tables as the database
// resolves them, as keys name them). It runs once per schema the plugin
// sees (newModelInfo).
func (ix *fkIndex) learn(s *schema.Schema, resolve func(string) string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.seen == nil {
		ix.seen = map[*schema.Schema]bool{}
	}
	var walk func(s *schema.Schema)
	walk = func(s *schema.Schema) {
		if s == nil || ix.seen[s] {
			return
		}
		ix.seen[s] = true
		for _, rel := range relationsOf(s) {
			for _, r := range append([]*schema.Relationship{rel}, joinRelations(rel)...) {
				if e, parent, ok := edgeOf(r); ok {
					e.child = resolve(e.child)
					ix.add(resolve(parent), e)
				}
			}
			walk(rel.FieldSchema)
			if rel.JoinTable != nil {
				walk(rel.JoinTable)
			}
		}
	}
	walk(s)
}

// add records an edge under its parent table, replacing the map.
func (ix *fkIndex) add(parent string, e fkEdge) {
	old := ix.byParent.Load()
	next := map[string][]fkEdge{}
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	for _, have := range next[parent] {
		if have == e {
			return
		}
	}
	next[parent] = append(append([]fkEdge(nil), next[parent]...), e)
	ix.byParent.Store(&next)
}

// relationsOf returns s's relationships, read under GORM's lock: parsing
// another schema may add to them (a has-many registers itself with its
// child).
func relationsOf(s *schema.Schema) []*schema.Relationship {
	s.Relationships.Mux.RLock()
	defer s.Relationships.Mux.RUnlock()
	out := make([]*schema.Relationship, 0, len(s.Relationships.Relations))
	for _, r := range s.Relationships.Relations {
		out = append(out, r)
	}
	return out
}

func joinRelations(rel *schema.Relationship) []*schema.Relationship {
	if rel.JoinTable == nil {
		return nil
	}
	return relationsOf(rel.JoinTable)
}

// edgeOf turns the constraint GORM would create for rel into an edge, if
// it has an action that writes the child.
func edgeOf(rel *schema.Relationship) (fkEdge, string, bool) {
	if rel.Field == nil {
		return fkEdge{}, "", false
	}
	if rel.Type == schema.BelongsTo && rel.FieldSchema != nil {
		// ParseConstraint reads the other side's relationships, which
		// parsing another schema may be adding to.
		rel.FieldSchema.Relationships.Mux.RLock()
		defer rel.FieldSchema.Relationships.Mux.RUnlock()
	}
	c := rel.ParseConstraint()
	if c == nil || c.Schema == nil || c.ReferenceSchema == nil {
		return fkEdge{}, "", false
	}
	e := fkEdge{
		child:          c.Schema.Table,
		onDelete:       writesChild(c.OnDelete),
		onUpdate:       writesChild(c.OnUpdate),
		deleteCascades: strings.EqualFold(strings.TrimSpace(c.OnDelete), "CASCADE"),
		refsKeyOnly:    true,
	}
	for _, f := range c.References {
		if !f.PrimaryKey {
			e.refsKeyOnly = false
		}
	}
	if !e.onDelete && !e.onUpdate {
		return fkEdge{}, "", false
	}
	return e, c.ReferenceSchema.Table, true
}

// writesChild reports whether a referential action changes child rows.
func writesChild(action string) bool {
	switch strings.ToUpper(strings.Join(strings.Fields(action), " ")) {
	case "CASCADE", "SET NULL", "SET DEFAULT":
		return true
	}
	return false
}

// reach returns every table the actions set off by a delete (deleted) or
// an update of rows of table reach, transitively; a cascaded delete of
// child rows sets off their own delete actions, a child whose foreign key
// was set (SET NULL, ON UPDATE) their update actions.
func (ix *fkIndex) reach(table string, deleted bool) []string {
	m := ix.byParent.Load()
	if m == nil || len((*m)[table]) == 0 {
		return nil
	}
	type visit struct {
		table   string
		deleted bool
	}
	seen := map[visit]bool{}
	tables := map[string]bool{}
	var out []string
	queue := []visit{{table, deleted}}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		if seen[v] {
			continue
		}
		seen[v] = true
		for _, e := range (*m)[v.table] {
			var next visit
			switch {
			case v.deleted && e.onDelete:
				next = visit{e.child, e.deleteCascades}
			case !v.deleted && e.onUpdate:
				next = visit{e.child, false}
			default:
				continue
			}
			if !tables[e.child] {
				tables[e.child] = true
				out = append(out, e.child)
			}
			queue = append(queue, next)
		}
	}
	return out
}

// cascades returns the shards of every table a model write's foreign-key
// actions may write, or nil. Called before the statement's SQL runs (it
// looks at what the statement will assign, as movesKey does).
func (p *Plugin) cascades(db *gorm.DB, mi *modelInfo, op writeOp) []tableShard {
	stmt := db.Statement
	if db.DryRun || stmt.Table == "" {
		return nil
	}
	m := p.fks.byParent.Load()
	if m == nil {
		return nil
	}
	table := p.modelTable(stmt.Table)
	if mi != nil {
		table = mi.table
	}
	edges := (*m)[table]
	if len(edges) == 0 {
		return nil
	}
	var tables []string
	switch op {
	case opDelete:
		if !stmt.Unscoped && stmt.Schema != nil && len(stmt.Schema.DeleteClauses) > 0 {
			return nil // a soft delete is an UPDATE of its own columns
		}
		tables = p.fks.reach(table, true)
	case opUpdate:
		if rekeys(stmt, mi, edges, p) {
			tables = p.fks.reach(table, false)
		}
	case opCreate:
		if c, ok := stmt.Clauses["INSERT"]; ok {
			// REPLACE deletes the row it conflicts with.
			if ins, _ := c.Expression.(clause.Insert); strings.Contains(strings.ToUpper(ins.Modifier), "REPLACE") {
				tables = p.fks.reach(table, true)
			}
		}
		if _, upsert := stmt.Clauses["ON CONFLICT"]; upsert {
			tables = append(tables, p.fks.reach(table, false)...)
		}
	}
	if len(tables) == 0 {
		return nil
	}
	return p.tableShards(tables)
}

// rekeys reports whether an update may change a column that an ON UPDATE
// action watches: when every such column is the primary key, only an
// update that moves the key; otherwise any update.
func rekeys(stmt *gorm.Statement, mi *modelInfo, edges []fkEdge, p *Plugin) bool {
	keyOnly := false
	for _, e := range edges {
		if !e.onUpdate {
			continue
		}
		if !e.refsKeyOnly {
			return true
		}
		keyOnly = true
	}
	if !keyOnly {
		return false
	}
	if mi == nil || len(mi.pks) == 0 {
		return true
	}
	return p.movesKey(stmt, mi)
}

// withCascades adds to table names every table their foreign-key actions
// reach, for raw writes, whose effect the plugin does not know: both
// delete and update actions count.
func (p *Plugin) withCascades(names []string) []string {
	out := names
	for _, n := range names {
		out = append(out, p.fks.reach(n, true)...)
		out = append(out, p.fks.reach(n, false)...)
	}
	if len(out) == len(names) {
		return names
	}
	seen := map[string]bool{}
	dedup := out[:0:0]
	for _, n := range out {
		if !seen[n] {
			seen[n] = true
			dedup = append(dedup, n)
		}
	}
	return dedup
}
