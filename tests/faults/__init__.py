"""The fault matrix (issue 31): each test is one row of docs/reliability.md, run by `make test-faults`."""
