module github.com/jtiguard/jtiguard/examples

go 1.25.0

require github.com/jtiguard/jtiguard v0.0.0

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dgraph-io/ristretto/v2 v2.4.2 // indirect
	github.com/dustin/go-humanize v1.0.1 // indirect
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	golang.org/x/sys v0.36.0 // indirect
)

replace github.com/jtiguard/jtiguard => ../
