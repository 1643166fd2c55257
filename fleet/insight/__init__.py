"""Energy insight for climate protection (docs/insight.md): energy per period from meter
registers, 15-minute load profiles, base load, CO2, benchmarks between buildings and monthly
reports. Computation modules (calendar, energy, profile, co2, benchmark, export, charts) are
pure: they take numbers and return numbers, no database, no clock. queries.py holds the SQL,
service.py puts the two together for the API and the reports."""
