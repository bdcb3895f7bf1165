module github.com/platforma/platforma/migrations

go 1.26.0
