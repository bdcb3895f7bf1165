-- +goose Up

-- rule:grade-thresholds
-- The grade thresholds, in the one place they are written: the lowest
-- score of each StabilityGrade (enum numbers: 1 STABLE, 2 UNSTABLE,
-- 3 CRITICAL). The generated grade column (through stability_grade) and
-- ListProfiles' grade filter (through grade_ceiling) both read them, so the
-- stored grade and the filter cannot disagree.
--
-- Changing a threshold takes a new migration that replaces this function
-- and then recomputes the stored grades, e.g.
--   UPDATE profile.profiles SET success_login_count = success_login_count;
-- (a stored generated column is recomputed when a column it depends on is
-- written). The Go tests of profile's store pin the values from the API's
-- side: change them in the same commit.
CREATE FUNCTION profile.grade_floor(grade integer) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE grade WHEN 1 THEN 80 WHEN 2 THEN 50 ELSE 0 END;

-- The score a grade's range stops below: the floor of the next grade up.
-- STABLE, and 0 (any grade), have no ceiling: 1000 is above every
-- numeric(5,2).
CREATE FUNCTION profile.grade_ceiling(grade integer) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE grade WHEN 2 THEN profile.grade_floor(1) WHEN 3 THEN profile.grade_floor(2) ELSE 1000 END;

-- The same grades as 0002's function, now from grade_floor: the stored
-- grades stay valid, so nothing is recomputed.
CREATE OR REPLACE FUNCTION profile.stability_grade(score numeric) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN score >= profile.grade_floor(1) THEN 1 WHEN score >= profile.grade_floor(2) THEN 2 ELSE 3 END;

-- +goose Down
CREATE OR REPLACE FUNCTION profile.stability_grade(score numeric) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN score >= 80 THEN 1 WHEN score >= 50 THEN 2 ELSE 3 END;
DROP FUNCTION profile.grade_ceiling(integer);
DROP FUNCTION profile.grade_floor(integer);
