"""Our PPO against trl 1.12's PPOTrainer on identical models and settings, interleaved (see the module).

    python scripts/benchmark_ppo.py                       # both sizes, 3 interleaved pairs each
    python scripts/benchmark_ppo.py --sizes tiny --pairs 1
Writes runs/bench-ppo/report.md and results.json; `make bench-ppo` runs it.
"""

from alignment.bench_ppo import main

if __name__ == "__main__":
    main()
