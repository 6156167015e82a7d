package main

import (
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Row is the benchmark's table: the same 15-column shape as the package's
// own benchmarks (strings, times, a nullable time, a float, a bool and a
// soft-delete column, as gorm.Model gives most tables).
type Row struct {
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

func newRow(i int) Row {
	pub := time.Date(2024, 3, 1, 12, 30, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	return Row{
		SKU:         fmt.Sprintf("SKU-%08d", i),
		Name:        fmt.Sprintf("Stainless steel water bottle %d", i),
		Description: strings.Repeat("Double-walled, vacuum insulated, keeps drinks cold for 24 hours. ", 3),
		PriceCents:  int64(1999 + i),
		Currency:    "EUR",
		Stock:       100 + i,
		WeightKg:    0.35,
		Active:      true,
		Tags:        "kitchen,outdoor,bottle",
		OwnerID:     int64(42 + i%7),
		PublishedAt: &pub,
	}
}

// seed creates the table and n rows through plain GORM (no cache sees the
// inserts) and returns their ids.
func seed(db *gorm.DB, n int) ([]uint, error) {
	if err := db.AutoMigrate(&Row{}); err != nil {
		return nil, fmt.Errorf("create table: %w", err)
	}
	rows := make([]Row, n)
	for i := range rows {
		rows[i] = newRow(i)
	}
	if err := db.CreateInBatches(rows, 500).Error; err != nil {
		return nil, fmt.Errorf("seed %d rows: %w", n, err)
	}
	ids := make([]uint, n)
	for i, r := range rows {
		ids[i] = r.ID
	}
	return ids, nil
}
