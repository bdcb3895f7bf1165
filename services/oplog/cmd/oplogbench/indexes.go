package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// secondaryIndexes are the indexes of operation_logs besides its primary
// key, each justified by a query (migrations/oplog/0003_queries.sql).
var secondaryIndexes = []string{"operation_logs_user_idx", "operation_logs_failure_idx", "operation_logs_time_brin"}

// runIndexes measures what each secondary index costs ingest: raw COPY
// into the schema with none of them, with each alone, and with all. The
// variants take turns for several rounds and each reports its median, so
// a slow minute on a shared machine does not land on one variant.
func runIndexes(d time.Duration, rounds int) error {
	ctx := context.Background()
	dsn, stopDB, err := database(ctx)
	if err != nil {
		return err
	}
	defer stopDB()
	fmt.Printf("oplogbench indexes: raw pgx COPY, %d rounds of %s per variant, median, on %d CPUs\n\n", rounds, d, cpus())
	variants := [][]string{nil}
	for _, ix := range secondaryIndexes {
		variants = append(variants, []string{ix})
	}
	variants = append(variants, secondaryIndexes)
	rates := make([][]float64, len(variants))
	for round := 0; round < rounds; round++ {
		for i, keep := range variants {
			db, err := freshDatabase(ctx, dsn, fmt.Sprintf("bench_index_%d", i), "")
			if err != nil {
				return err
			}
			for _, ix := range secondaryIndexes {
				if !contains(keep, ix) {
					if _, err := execOn(ctx, db, "DROP INDEX oplog."+ix); err != nil {
						return err
					}
				}
			}
			rate, err := rawCopy(ctx, db, d)
			if err != nil {
				return err
			}
			rates[i] = append(rates[i], rate)
		}
	}
	median := func(v []float64) float64 {
		slices.Sort(v)
		return v[len(v)/2]
	}
	none := median(rates[0])
	for i, keep := range variants {
		label := "primary key only"
		switch {
		case len(keep) == 1:
			label = "+ " + keep[0]
		case len(keep) > 1:
			label = "all (as deployed)"
		}
		rate := median(rates[i])
		fmt.Printf("%-38s %9.0f rows/s  (%+.0f%%)  rounds: %.0f\n", label, rate, 100*(rate-none)/none, rates[i])
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
