module github.com/jtiguard/jtiguard/examples

go 1.26.0

require (
	github.com/go-jose/go-jose/v4 v4.1.9
	github.com/jtiguard/jtiguard v0.0.0
	github.com/jtiguard/jtiguard/jtiprom v0.0.0
	github.com/jtiguard/jtiguard/redisstore v0.0.0
	github.com/prometheus/client_golang v1.25.0
	github.com/redis/go-redis/v9 v9.23.0
	github.com/stretchr/testify v1.12.1
	golang.org/x/oauth2 v0.38.0
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dgraph-io/ristretto/v2 v2.4.2 // indirect
	github.com/dustin/go-humanize v1.0.1 // indirect
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.48.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace (
	github.com/jtiguard/jtiguard => ../
	github.com/jtiguard/jtiguard/jtiprom => ../jtiprom
	github.com/jtiguard/jtiguard/redisstore => ../redisstore
)
