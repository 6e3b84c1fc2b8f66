;; Wasm 3.0 relaxed SIMD and extended constant expressions: f32x4.relaxed_madd (2 * 3 + 4, fused or
;; not) and a global initialised by (i32.add 30 2). Exits 0 when 10 + 32 is 42.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (global $g i32 (i32.add (i32.const 30) (i32.const 2)))
  (func (export "_start")
    (call $exit
      (i32.ne
        (i32.add
          (i32.trunc_f32_s
            (f32x4.extract_lane 0 (f32x4.relaxed_madd (f32x4.splat (f32.const 2)) (f32x4.splat (f32.const 3)) (f32x4.splat (f32.const 4)))))
          (global.get $g))
        (i32.const 42)))))
