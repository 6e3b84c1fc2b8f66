;; Wasm 3.0 tail calls and typed function references: a sum over 1,000,000 steps by return_call (a
;; plain call would overflow the stack), entered through call_ref. Exits 0 on 500000500000.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (type $t (func (param i64 i64) (result i64)))
  (func $sum (type $t) (param $n i64) (param $acc i64) (result i64)
    (if (result i64) (i64.eqz (local.get $n))
      (then (local.get $acc))
      (else (return_call $sum (i64.sub (local.get $n) (i64.const 1)) (i64.add (local.get $acc) (local.get $n))))))
  (elem declare func $sum)
  (func (export "_start")
    (call $exit (i64.ne (call_ref $t (i64.const 1000000) (i64.const 0) (ref.func $sum)) (i64.const 500000500000)))))
