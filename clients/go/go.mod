module pyward.dev/client

go 1.19
