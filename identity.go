package writethrough

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/gormcache/writethrough/internal/sqltext"
	"gorm.io/gorm"
)

// The database in the key space. Keys name a table as the database
// resolves it, inside the database it belongs to, so that
//
//   - two spellings of one table (TableName "items" and "public.items", a
//     name found through the search_path) share keys and fences, and
//   - two databases on one Redis (a Postgres and a MariaDB, two tenants'
//     Postgres databases) never read each other's rows.
//
// The database's identity is Config.Database when set, else derived from
// the connection when the plugin is installed:
//
//	postgres.<current_database()>   tables as <schema>.<table>
//	mysql                           tables as <database>.<table>
//	sqlite.<8 hex digits>           tables as main.<table>; the digits hash the main file's path
//
// MySQL's identity holds no database name because its tables are named
// with theirs: a connection whose default database is "app" and one whose
// default is "other" reach app.items alike, and must fence one key. With
// Config.Database set, the identity names the connection's default
// database instead, and its tables are keyed bare.

// tableResolver turns table names as GORM or a statement writes them into
// the name the database resolves them to.
type tableResolver struct {
	dialect string
	id      string // the database's identity, escaped for keys
	schema  string // where an unqualified name falls back to
	fold    bool   // table names compare without ASCII case (SQLite; MySQL with lower_case_table_names)
	// bareDefault: tables of the default schema are keyed bare (MySQL with
	// Config.Database set: the identity names that database, so replicas
	// reached under other database names share keys).
	bareDefault bool
	// Postgres: an unqualified name is looked up along the search_path once
	// (on db, bounded by timeout) and remembered in found.
	db      *sql.DB
	timeout time.Duration
	found   sync.Map // unqualified name -> schema
}

// identify learns the database's identity and how it resolves table names.
// It runs once, when the plugin is installed.
func (p *Plugin) identify(db *gorm.DB) error {
	r := &tableResolver{dialect: db.Dialector.Name(), timeout: p.cfg.WriteTimeout}
	sqlDB, err := getDBConn(db.ConnPool)
	if err != nil {
		sqlDB = nil // a pool of one's own: no look-ups, names as written
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.WriteTimeout)
	defer cancel()
	id := r.dialect
	switch r.dialect {
	case "postgres":
		if sqlDB == nil {
			return errors.New("writethrough: cannot identify the Postgres database: no *sql.DB behind the connection pool")
		}
		var name string
		if err := sqlDB.QueryRowContext(ctx, "SELECT current_database(), COALESCE(current_schema(), 'public')").Scan(&name, &r.schema); err != nil {
			return fmt.Errorf("writethrough: cannot identify the Postgres database (set Config.Database to name it): %w", err)
		}
		id, r.db = "postgres."+name, sqlDB
	case "mysql":
		if sqlDB == nil {
			return errors.New("writethrough: cannot identify the MySQL database: no *sql.DB behind the connection pool")
		}
		var name sql.NullString
		var lower int
		if err := sqlDB.QueryRowContext(ctx, "SELECT DATABASE(), @@lower_case_table_names").Scan(&name, &lower); err != nil {
			return fmt.Errorf("writethrough: cannot identify the MySQL database (set Config.Database to name it): %w", err)
		}
		r.schema, r.fold = name.String, lower != 0
	case "sqlite", "sqlite3":
		r.schema, r.fold = "main", true
		file := ""
		if sqlDB != nil {
			rows, err := sqlDB.QueryContext(ctx, "PRAGMA database_list")
			if err != nil {
				return fmt.Errorf("writethrough: cannot identify the SQLite database (set Config.Database to name it): %w", err)
			}
			for rows.Next() {
				var seq int
				var name string
				var path sql.NullString
				if err := rows.Scan(&seq, &name, &path); err == nil && name == "main" {
					file = path.String
				}
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return fmt.Errorf("writethrough: cannot identify the SQLite database (set Config.Database to name it): %w", err)
			}
		}
		h := fnv.New32a()
		h.Write([]byte(file))
		id = fmt.Sprintf("sqlite.%08x", h.Sum32())
	}
	if p.cfg.Database != "" {
		id = p.cfg.Database
		r.bareDefault = r.dialect == "mysql"
	}
	r.id = string(appendEscaped(nil, id))
	p.resolver = r
	return nil
}

// modelTable is the resolved name of a model's table. GORM quotes every
// dot-separated part of schema.Table, so each is a quoted identifier.
func (p *Plugin) modelTable(table string) string {
	parts := strings.Split(table, ".")
	name := make(sqltext.TableName, len(parts))
	for i, part := range parts {
		name[i] = sqltext.Ident{Name: part, Quoted: true}
	}
	return p.resolveTable(name)
}

// resolveTable returns the table as the database resolves the name:
// qualified by its schema (Postgres: found along the search_path), its
// database (MySQL) or "main" (SQLite), case folded where the database
// folds it. Other dialects keep the name as written.
func (p *Plugin) resolveTable(t sqltext.TableName) string {
	r := p.resolver
	parts := make([]string, len(t))
	for i, id := range t {
		parts[i] = id.Name
		if r == nil {
			continue
		}
		if r.fold || r.dialect == "postgres" && !id.Quoted {
			parts[i] = strings.ToLower(id.Name)
		}
	}
	if r == nil {
		return strings.Join(parts, ".")
	}
	switch r.dialect {
	case "postgres":
		switch len(parts) {
		case 1:
			return r.pgSchema(parts[0]) + "." + parts[0]
		case 3:
			return parts[1] + "." + parts[2] // database.schema.table: the database is this one
		}
	case "mysql", "sqlite", "sqlite3":
		if r.bareDefault && len(parts) == 2 && parts[0] == r.foldName(r.schema) {
			return parts[1]
		}
		if len(parts) == 1 && !r.bareDefault {
			return r.foldName(r.schema) + "." + parts[0]
		}
	}
	return strings.Join(parts, ".")
}

func (r *tableResolver) foldName(s string) string {
	if r.fold {
		return strings.ToLower(s)
	}
	return s
}

// pgSchema returns the schema an unqualified Postgres table name resolves
// to: the first schema on the search_path that holds it, or, when none
// does (not created yet) or the look-up fails, the first schema of the
// search_path, where CREATE TABLE puts it. An answer is remembered, so each
// name is looked up once; a failed look-up is not. The look-up takes a
// connection of the pool, bounded by WriteTimeout: a pool of one
// connection held by a transaction makes it wait that long and fall back.
func (r *tableResolver) pgSchema(table string) string {
	if v, ok := r.found.Load(table); ok {
		return v.(string)
	}
	schema := r.schema
	if r.db != nil {
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		var found sql.NullString
		err := r.db.QueryRowContext(ctx,
			"SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
			`"`+strings.ReplaceAll(table, `"`, `""`)+`"`).Scan(&found)
		cancel()
		if err != nil {
			return schema // asked again next time: a busy pool, a timeout
		}
		if found.Valid {
			schema = found.String
		}
	}
	r.found.Store(table, schema)
	return schema
}

// tableKey is the table part of every key of a resolved table: the
// database's identity and the table, each escaped, joined by ':' (which
// escaping never leaves in either).
func (p *Plugin) tableKey(resolved string) string {
	b := make([]byte, 0, 64)
	if p.resolver != nil {
		b = append(b, p.resolver.id...)
		b = append(b, ':')
	}
	return string(appendEscaped(b, resolved))
}
