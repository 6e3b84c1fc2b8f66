;; Loops forever without calling the host: only epoch interruption can stop it.
(module
  (func $main (export "_start")
    (loop $forever (br $forever))))
