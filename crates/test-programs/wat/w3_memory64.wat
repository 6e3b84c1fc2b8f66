;; Wasm 3.0 memory64 and multi-memory: a 64-bit memory beside a 32-bit one, a store through a 64-bit
;; address and a copy between the two memories. Exits 0 when 42 arrived in the 32-bit memory.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory $small (export "memory") 1)
  (memory $wide i64 1)
  (func (export "_start")
    (i32.store $wide (i64.const 65532) (i32.const 42))
    (memory.copy $small $wide (i32.const 8) (i64.const 65532) (i32.const 4))
    (call $exit (i32.ne (i32.load $small (i32.const 8)) (i32.const 42)))))
