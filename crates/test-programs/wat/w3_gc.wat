;; Wasm 3.0 GC: a struct with a mutable field, an array, i31 references and a cast. Exits 0 when
;; 40 + 2 went through all of them.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (type $point (struct (field $x (mut i32)) (field $y i32)))
  (type $arr (array (mut i32)))
  (func (export "_start")
    (local $p (ref $point))
    (local $a (ref $arr))
    (local $any anyref)
    (local.set $p (struct.new $point (i32.const 1) (i32.const 2)))
    (struct.set $point $x (local.get $p) (i32.const 40))
    (local.set $any (local.get $p))
    (local.set $a (array.new $arr (i32.const 0) (i32.const 10)))
    (array.set $arr (local.get $a) (i32.const 9)
      (i32.add (struct.get $point $x (ref.cast (ref $point) (local.get $any))) (struct.get $point $y (local.get $p))))
    (call $exit
      (i32.ne
        (i32.add (array.get $arr (local.get $a) (i32.const 9)) (i31.get_s (ref.i31 (i32.const 0))))
        (i32.const 42)))))
