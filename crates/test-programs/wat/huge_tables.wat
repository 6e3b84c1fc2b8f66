;; Five funcref tables, each grown by 10 million elements (80 MB of host memory apiece); a growth that
;; is refused traps. Under `--memory 1M` the tables count against the cap like memories do.
(module
  (table $t0 0 funcref)
  (table $t1 0 funcref)
  (table $t2 0 funcref)
  (table $t3 0 funcref)
  (table $t4 0 funcref)
  (func $check (param i32)
    (if (i32.eq (local.get 0) (i32.const -1)) (then unreachable)))
  (func (export "_start")
    (call $check (table.grow $t0 (ref.null func) (i32.const 10000000)))
    (call $check (table.grow $t1 (ref.null func) (i32.const 10000000)))
    (call $check (table.grow $t2 (ref.null func) (i32.const 10000000)))
    (call $check (table.grow $t3 (ref.null func) (i32.const 10000000)))
    (call $check (table.grow $t4 (ref.null func) (i32.const 10000000)))))
