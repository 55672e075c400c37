module github.com/jtiguard/jtiguard/examples

go 1.26.0

require (
	github.com/go-jose/go-jose/v4 v4.1.9
	github.com/jtiguard/jtiguard v0.0.0
	github.com/jtiguard/jtiguard/redisstore v0.0.0
	github.com/redis/go-redis/v9 v9.23.0
	github.com/stretchr/testify v1.12.1
	golang.org/x/oauth2 v0.38.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dgraph-io/ristretto/v2 v2.4.2 // indirect
	github.com/dustin/go-humanize v1.0.1 // indirect
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

replace (
	github.com/jtiguard/jtiguard => ../
	github.com/jtiguard/jtiguard/redisstore => ../redisstore
)
