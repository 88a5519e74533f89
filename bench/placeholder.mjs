// `npm run bench` is the benchmark entry point; the load benchmark itself lands with its issue.
console.log('parley bench: no benchmark yet (see the benchmarks issue).');
