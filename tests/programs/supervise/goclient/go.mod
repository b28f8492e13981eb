module sxclient

go 1.19
