;; Four linear memories of 56 MiB each (multi-memory), every page touched: 224 MiB in all. Under
;; `--memory 64M` each memory alone fits the cap; together they must not.
(module
  (memory $a 896)
  (memory $b 896)
  (memory $c 896)
  (memory $d 896)
  (func (export "_start")
    (local $off i32)
    (loop $touch
      (i32.store $a (local.get $off) (i32.const 1))
      (i32.store $b (local.get $off) (i32.const 1))
      (i32.store $c (local.get $off) (i32.const 1))
      (i32.store $d (local.get $off) (i32.const 1))
      (local.set $off (i32.add (local.get $off) (i32.const 4096)))
      (br_if $touch (i32.lt_u (local.get $off) (i32.const 58720256))))))
